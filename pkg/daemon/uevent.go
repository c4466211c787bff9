package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// blockEvents listens to the kernel's uevents (netlink, the group udev
// itself reads) and sends on the returned channel whenever a block device
// is added or changes (a disk plugged in, a loop device attached, a
// partition table re-read), so new volumes are picked up at once. The
// channel is buffered by one: a burst of events becomes one rescan. The
// listener ends when ctx does; done is closed once it has.
//
// The socket is non-blocking and read through the runtime's poller, so
// closing it wakes a pending read: a blocking recvfrom on netlink cannot
// be woken (shutdown(2) is EOPNOTSUPP there) and would outlive ctx.
func blockEvents(ctx context.Context) (events <-chan struct{}, done <-chan struct{}, err error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	sock := os.NewFile(uintptr(fd), "netlink uevent")
	ch := make(chan struct{}, 1)
	stopped := make(chan struct{})
	go func() {
		<-ctx.Done()
		_ = sock.Close()
	}()
	go func() {
		defer close(stopped)
		defer sock.Close()
		buf := make([]byte, 16<<10)
		for {
			n, err := sock.Read(buf)
			switch {
			case errors.Is(err, unix.ENOBUFS):
				// Events were dropped; rescan to be safe.
				notify(ch)
				continue
			case errors.Is(err, unix.EINTR), errors.Is(err, io.EOF):
				continue
			case err != nil:
				return // closed (ctx ended) or broken
			}
			if isBlockChange(buf[:n]) {
				notify(ch)
			}
		}
	}()
	return ch, stopped, nil
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// isBlockChange parses one kernel uevent ("ACTION@DEVPATH\0KEY=VALUE\0...")
// and reports an add or change of a block device.
func isBlockChange(msg []byte) bool {
	fields := bytes.Split(msg, []byte{0})
	var action, subsystem string
	for _, f := range fields {
		k, v, ok := bytes.Cut(f, []byte("="))
		if !ok {
			continue
		}
		switch string(k) {
		case "ACTION":
			action = string(v)
		case "SUBSYSTEM":
			subsystem = string(v)
		}
	}
	return subsystem == "block" && (action == "add" || action == "change")
}
