package dmcrypt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// backingLockWait bounds how long Open waits for a whole-disk lock held
// by someone else: udev holds it (LOCK_EX) for as long as it re-reads the
// partition table of a disk that was just written and closed, which under
// load can take seconds.
const backingLockWait = 10 * time.Second

// lockBacking takes a shared BSD lock on the whole disk that holds the
// block device f, as systemd's block device locking convention asks, and
// returns its release. While udev re-reads a disk's partition table after
// a writer closed it (BLKRRPART, under LOCK_EX), the kernel claims the
// disk exclusively for a moment, and a crypt table loaded then fails with
// EBUSY ("Device lookup failed"): udev skips the re-read while anyone
// holds the lock, and Open waits for one in progress to end. Taking the
// lock is a courtesy: when it cannot be had in time, the table is loaded
// anyway and a claim still in place is reported as ErrBackingBusy.
func lockBacking(f *os.File) (release func(), err error) {
	l, err := wholeDisk(f)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(backingLockWait)
	for {
		err := unix.Flock(int(l.Fd()), unix.LOCK_SH|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return func() { l.Close() }, nil
}

// wholeDisk opens, read-only and apart from f (a lock of the caller's on
// f stays as it is), the whole disk that holds the block device f: f's
// device itself, or a partition's disk (/sys/dev/block/MAJ:MIN/..).
func wholeDisk(f *os.File) (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("dmcrypt: backing device: %w", err)
	}
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	path := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		dir, err := filepath.EvalSymlinks(sys)
		if err != nil {
			return nil, fmt.Errorf("dmcrypt: the disk of %s: %w", f.Name(), err)
		}
		path = filepath.Join("/dev", filepath.Base(filepath.Dir(dir)))
	}
	d, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("dmcrypt: the disk of %s: %w", f.Name(), err)
	}
	return d, nil
}
