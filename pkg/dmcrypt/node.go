package dmcrypt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// mapperDir is where mapping nodes live.
const mapperDir = "/dev/mapper"

// udevControl exists while udevd runs; udev then makes /dev/mapper links.
// udevQueue exists while udev has events it has not finished (what
// `udevadm settle` waits for). Variables so tests can redirect them.
var (
	udevControl = "/run/udev/control"
	udevQueue   = "/run/udev/queue"
)

// udevWait is how long Open waits for udev's node once udev's queue is
// empty; while events are queued (a slow or loaded machine mapping many
// volumes at once) it waits on, up to udevMaxWait. atrestd's unit has no
// CAP_MKNOD: where udev runs, the node is udev's to make.
const (
	udevWait    = 2 * time.Second
	udevMaxWait = 60 * time.Second
)

// NodePath returns /dev/mapper/name.
func NodePath(name string) string { return filepath.Join(mapperDir, name) }

// ensureNode makes sure /dev/mapper/NAME reaches m's device. Where udev
// runs it makes the node (a symlink to ../dm-N) on the resume event; in an
// initramfs or container without udev nobody does, so ensureNode creates
// the block node itself, as libdevmapper's fallback does.
func ensureNode(m *Mapping) error {
	dev := unix.Mkdev(m.Major, m.Minor)
	udev := false
	if _, err := os.Stat(udevControl); err == nil {
		udev = true
		if waitUdev(m.Path, dev) {
			return nil
		}
	}
	if nodeIs(m.Path, dev) {
		return nil
	}
	if err := os.MkdirAll(mapperDir, 0o755); err != nil {
		return fmt.Errorf("dmcrypt: create %s: %w", mapperDir, err)
	}
	// A leftover node of an earlier mapping with this name is replaced;
	// anything else in the way is an error.
	if st, err := os.Lstat(m.Path); err == nil {
		if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
			return fmt.Errorf("dmcrypt: %s exists and is not a block device node", m.Path)
		}
		if err := os.Remove(m.Path); err != nil {
			return fmt.Errorf("dmcrypt: replace stale %s: %w", m.Path, err)
		}
	}
	if err := unix.Mknod(m.Path, unix.S_IFBLK|0o600, int(dev)); err != nil && !errors.Is(err, os.ErrExist) {
		if udev {
			return fmt.Errorf("%w: udev made no %s in time, and creating it failed: %w", ErrNoNode, m.Path, err)
		}
		return fmt.Errorf("%w: create %s: %w", ErrNoNode, m.Path, err)
	}
	if !nodeIs(m.Path, dev) {
		return fmt.Errorf("dmcrypt: %s does not reach device %d:%d", m.Path, m.Major, m.Minor)
	}
	return nil
}

// waitUdev waits until path is the block device dev, udevWait past the
// moment udev's queue was last seen busy, never longer than udevMaxWait,
// and reports whether it is.
func waitUdev(path string, dev uint64) bool {
	start := time.Now()
	deadline := start.Add(udevWait)
	for !nodeIs(path, dev) {
		now := time.Now()
		if _, err := os.Stat(udevQueue); err == nil {
			deadline = now.Add(udevWait)
		}
		if now.After(deadline) || now.Sub(start) > udevMaxWait {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// nodeIs reports whether path (following symlinks) is the block device dev.
func nodeIs(path string, dev uint64) bool {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == dev
}

// removeNode deletes the block node ensureNode made for dev. Symlinks are
// udev's and left to it.
func removeNode(name string, dev uint64) {
	path := NodePath(name)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == dev {
		_ = os.Remove(path)
	}
}
