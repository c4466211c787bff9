// Package devlock takes the same advisory locks cryptsetup takes around LUKS2
// header I/O, so that atrest and cryptsetup (or two atrest processes) never
// interleave header reads and writes.
//
// cryptsetup 2.6 (lib/utils_device_locking.c, docs/LUKS2-locking.txt):
// for a block device it flocks /run/cryptsetup/L_<major>:<minor> (directory
// 0700, created on demand), shared for reads and exclusive for writes, and
// unlinks the file when it can take it exclusively on release; after taking
// a lock it checks that the path still names the inode it locked, and starts
// over otherwise. For a regular file it flocks the file itself. This package
// follows that protocol step by step.
package devlock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Dir is the lock directory Debian's cryptsetup is built with
// (DEFAULT_LUKS2_LOCK_PATH); a variable so tests can redirect it.
var Dir = "/run/cryptsetup"

// ErrUnsupported is returned for paths that are neither block devices nor
// regular files.
var ErrUnsupported = errors.New("devlock: not a block device or regular file")

// Lock is a held lock; Release drops it.
type Lock struct {
	f         *os.File
	resource  string // lock file path for block devices, "" for regular files
	exclusive bool
}

// Exclusive reports whether the lock is a write lock.
func (l *Lock) Exclusive() bool { return l.exclusive }

// Acquire locks the device or file at path, shared or exclusive, waiting
// until ctx is done. It polls with a non-blocking flock so that a
// cancellation is honoured even while cryptsetup holds the lock.
func Acquire(ctx context.Context, path string, exclusive bool) (*Lock, error) {
	wait := time.Millisecond
	for {
		l, err := try(path, exclusive)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, errStale) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("devlock: waiting for %s lock on %s: %w", kind(exclusive), path, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// TryAcquire is Acquire without waiting: it returns an error wrapping
// unix.EWOULDBLOCK when another process holds a conflicting lock.
func TryAcquire(path string, exclusive bool) (*Lock, error) {
	for {
		l, err := try(path, exclusive)
		if errors.Is(err, errStale) {
			continue
		}
		return l, err
	}
}

var errStale = errors.New("devlock: lock file replaced while locking")

func kind(exclusive bool) string {
	if exclusive {
		return "write"
	}
	return "read"
}

func try(path string, exclusive bool) (*Lock, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("devlock: %s: %w", path, err)
	}
	l := &Lock{exclusive: exclusive}
	var err error
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		l.resource = Resource(st.Rdev)
		l.f, err = openResource(l.resource)
	case unix.S_IFREG:
		l.f, err = os.OpenFile(path, os.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			l.f, err = os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		}
	default:
		return nil, fmt.Errorf("%w: %s", ErrUnsupported, path)
	}
	if err != nil {
		return nil, fmt.Errorf("devlock: open lock for %s: %w", path, err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	if err := unix.Flock(int(l.f.Fd()), how|unix.LOCK_NB); err != nil {
		l.f.Close()
		return nil, fmt.Errorf("devlock: %s lock on %s: %w", kind(exclusive), path, err)
	}
	// Another process may have unlinked the resource between our open and
	// our flock (see Release); then our lock guards nothing.
	if l.resource != "" && !sameFile(l.f, l.resource) {
		_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
		l.f.Close()
		return nil, errStale
	}
	return l, nil
}

// Resource returns the lock file cryptsetup uses for the block device rdev.
func Resource(rdev uint64) string {
	return filepath.Join(Dir, fmt.Sprintf("L_%d:%d", unix.Major(rdev), unix.Minor(rdev)))
}

func openResource(res string) (*os.File, error) {
	if err := os.Mkdir(Dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	return os.OpenFile(res, os.O_CREATE|os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o777)
}

func sameFile(f *os.File, path string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// Release drops the lock. For a block device it first tries to upgrade to an
// exclusive lock and, when nobody else holds the file, unlinks it, as
// cryptsetup does, so /run/cryptsetup does not fill with stale files.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	fd := int(l.f.Fd())
	if l.resource != "" && unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil && sameFile(l.f, l.resource) {
		_ = os.Remove(l.resource)
	}
	_ = unix.Flock(fd, unix.LOCK_UN)
	err := l.f.Close()
	l.f = nil
	return err
}
