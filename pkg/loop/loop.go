// Package loop attaches regular files to Linux loop devices through the
// loop-control ioctls, without losetup. atrest's tests, its demo and the
// real-kernel guest (whose busybox losetup lacks --show) use it to turn an
// image file into a block device.
package loop

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoLoop is returned when this kernel offers no loop devices.
var ErrNoLoop = errors.New("loop: no loop device support (/dev/loop-control missing)")

// Device is an attached loop device. It is attached with autoclear, so the
// kernel detaches it once Detach has run and every other opener (cryptsetup,
// a dm-crypt mapping) has let go, even if the process dies first.
type Device struct {
	// Path is the device node, e.g. /dev/loop3.
	Path string
	f    *os.File
}

// Options tune Attach.
type Options struct {
	ReadOnly bool
	// SectorSize is the logical block size the device reports (512 when 0).
	SectorSize uint32
}

// Attach binds the file at backing to a free loop device.
func Attach(backing string, opts Options) (*Device, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	bf, err := os.OpenFile(backing, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: open backing file: %w", err)
	}
	defer bf.Close()
	return AttachFile(bf, backing, opts)
}

// AttachFile binds the open file bf (its name recorded as name) to a free
// loop device: the device is backed by exactly that file, whatever its
// path names by now. bf stays the caller's to close. A file opened
// read-only makes a read-only device.
func AttachFile(bf *os.File, name string, opts Options) (*Device, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrNoLoop
		}
		return nil, fmt.Errorf("loop: %w", err)
	}
	defer ctl.Close()

	// Another process may take the device between GET_FREE and CONFIGURE;
	// the kernel answers EBUSY then, and we ask again.
	for attempt := 0; attempt < 32; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop: get free device: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		lf, err := openNode(path, n, flag)
		if err != nil {
			return nil, err
		}
		// LoopConfig.Size is the kernel's block_size field.
		cfg := unix.LoopConfig{Fd: uint32(bf.Fd()), Size: opts.SectorSize}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		if opts.ReadOnly {
			cfg.Info.Flags |= unix.LO_FLAGS_READ_ONLY
		}
		copy(cfg.Info.File_name[:], name)
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) {
			lf.Close()
			time.Sleep(time.Duration(attempt) * time.Millisecond)
			continue
		}
		if err != nil {
			lf.Close()
			return nil, fmt.Errorf("loop: configure %s: %w", path, err)
		}
		return &Device{Path: path, f: lf}, nil
	}
	return nil, errors.New("loop: every free loop device was taken by another process")
}

// openNode opens /dev/loopN, creating the node when no devtmpfs or udev did.
func openNode(path string, n, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag, 0)
	if errors.Is(err, os.ErrNotExist) {
		if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("loop: create %s: %w", path, err)
		}
		f, err = os.OpenFile(path, flag, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("loop: open %s: %w", path, err)
	}
	return f, nil
}

// File is the open loop device node: its device number (fstat) names the
// device for as long as it is attached. It is closed by Detach.
func (d *Device) File() *os.File { return d.f }

// Detach releases the device. With autoclear the kernel completes the
// detach once the last other user closes it.
func (d *Device) Detach() error {
	if d.f == nil {
		return nil
	}
	err := unix.IoctlSetInt(int(d.f.Fd()), unix.LOOP_CLR_FD, 0)
	cerr := d.f.Close()
	d.f = nil
	// ENXIO: already detached (autoclear did it); EBUSY cannot happen with
	// autoclear set, the kernel defers instead.
	if err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("loop: detach %s: %w", d.Path, err)
	}
	return cerr
}
