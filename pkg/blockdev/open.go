package blockdev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Handle is a device opened for writing by OpenExclusive. While it is open
// the kernel refuses to mount, swapon, or stack anything on a block device,
// and udev (and other tools that follow systemd's block device locking
// convention) leave it alone.
type Handle struct {
	// File is open read-write; write through it, then Close the Handle.
	File   *os.File
	Device *Device
	lock   *os.File // the whole disk's lock when Device is a partition
}

// Close releases the lock and the exclusive claim.
func (h *Handle) Close() error {
	var lerr error
	if h.lock != nil {
		lerr = h.lock.Close()
	}
	return errors.Join(h.File.Close(), lerr)
}

// lockWait bounds how long OpenExclusive waits for a lock held by someone
// else: udev holds a shared lock for the few milliseconds it probes a
// device that just changed.
const lockWait = 3 * time.Second

// OpenExclusive opens d read-write for formatting. A block device is opened
// with O_EXCL, so the kernel refuses it (ErrBusy) if anything has claimed
// it — a mount in any namespace, swap, device-mapper, md, a btrfs member —
// even where CheckUnused could not see it. It then takes a BSD lock
// (LOCK_EX) on the whole disk, as systemd's block device locking convention
// asks of tools that write partition tables and superblocks, so udev does
// not probe it half-written. ErrReadOnly when it cannot be written; an error
// if the path now names something other than what Inspect saw.
func OpenExclusive(ctx context.Context, d *Device) (*Handle, error) {
	// The kernel lets root open a read-only block device for writing and
	// fails the writes; refuse up front instead.
	if d.ReadOnly {
		return nil, fmt.Errorf("blockdev: %s: %w", d.Path, ErrReadOnly)
	}
	flags := os.O_RDWR | unix.O_CLOEXEC
	if d.Kind == BlockDevice {
		flags |= unix.O_EXCL
	}
	f, err := os.OpenFile(d.Path, flags, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.EBUSY):
			return nil, &BusyError{Device: d.Path, Err: err}
		case errors.Is(err, unix.EROFS), errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return nil, fmt.Errorf("blockdev: %s: %w: %w", d.Path, ErrReadOnly, err)
		}
		return nil, fmt.Errorf("blockdev: open %s: %w", d.Path, err)
	}
	h := &Handle{File: f, Device: d}
	if err := h.verifySame(); err != nil {
		f.Close()
		return nil, err
	}
	lockFile := f
	if d.Partition && d.Disk != "" {
		if disk, err := os.OpenFile(filepath.Join("/dev", d.Disk), os.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			h.lock, lockFile = disk, disk
		}
	}
	if err := lock(ctx, lockFile); err != nil {
		h.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &BusyError{Device: d.Path, Locked: true, Err: err}
		}
		return nil, fmt.Errorf("blockdev: lock %s: %w", d.Path, err)
	}
	return h, nil
}

// verifySame guards against the path being replaced between Inspect and
// the open.
func (h *Handle) verifySame() error {
	var st unix.Stat_t
	if err := unix.Fstat(int(h.File.Fd()), &st); err != nil {
		return fmt.Errorf("blockdev: stat %s: %w", h.Device.Path, err)
	}
	d := h.Device
	same := false
	switch d.Kind {
	case BlockDevice:
		same = st.Mode&unix.S_IFMT == unix.S_IFBLK && unix.Major(st.Rdev) == d.Major && unix.Minor(st.Rdev) == d.Minor
	case RegularFile:
		same = st.Mode&unix.S_IFMT == unix.S_IFREG && st.Dev == d.dev && st.Ino == d.ino
	}
	if !same {
		return fmt.Errorf("blockdev: %s changed after it was inspected", d.Path)
	}
	return nil
}

func lock(ctx context.Context, f *os.File) error {
	deadline := time.Now().Add(lockWait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// RereadPartitions asks the kernel to re-read the partition table of the
// whole disk h (BLKRRPART), e.g. after its partition table was wiped, so
// stale partition devices disappear. It is a no-op for regular files and
// partitions. The kernel answers EINVAL for a disk that cannot have
// partitions (a loop device without partscan); that is reported as nil.
func (h *Handle) RereadPartitions() error {
	d := h.Device
	if d.Kind != BlockDevice || d.Partition {
		return nil
	}
	var err error
	for try := 0; try < 5; try++ {
		err = unix.IoctlSetInt(int(h.File.Fd()), unix.BLKRRPART, 0)
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err == nil || errors.Is(err, unix.EINVAL) {
		return nil
	}
	return fmt.Errorf("blockdev: re-read partition table of %s: %w", d.Path, err)
}
