package daemon

import (
	"bytes"
	"context"

	"golang.org/x/sys/unix"
)

// blockEvents listens to the kernel's uevents (netlink, the group udev
// itself reads) and sends on the returned channel whenever a block device
// is added or changes (a disk plugged in, a loop device attached, a
// partition table re-read), so new volumes are picked up at once. The
// channel is buffered by one: a burst of events becomes one rescan.
func blockEvents(ctx context.Context) (<-chan struct{}, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	ch := make(chan struct{}, 1)
	go func() {
		<-ctx.Done()
		// Shutting the socket down ends the blocked Recvfrom below.
		_ = unix.Shutdown(fd, unix.SHUT_RDWR)
	}()
	go func() {
		defer unix.Close(fd)
		buf := make([]byte, 16<<10)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if ctx.Err() != nil {
				return
			}
			if err == unix.EINTR || err == unix.ENOBUFS {
				// ENOBUFS: events were dropped; rescan to be safe.
				if err == unix.ENOBUFS {
					notify(ch)
				}
				continue
			}
			if err != nil || n == 0 {
				return
			}
			if isBlockChange(buf[:n]) {
				notify(ch)
			}
		}
	}()
	return ch, nil
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
