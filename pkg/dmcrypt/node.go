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
const udevControl = "/run/udev/control"

// udevWait bounds how long Open waits for udev before making the node.
const udevWait = 2 * time.Second

// NodePath returns /dev/mapper/name.
func NodePath(name string) string { return filepath.Join(mapperDir, name) }

// ensureNode makes sure /dev/mapper/NAME reaches m's device. Where udev
// runs it makes the node (a symlink to ../dm-N) on the resume event; in an
// initramfs or container without udev nobody does, so ensureNode creates
// the block node itself, as libdevmapper's fallback does.
func ensureNode(m *Mapping) error {
	dev := unix.Mkdev(m.Major, m.Minor)
	if _, err := os.Stat(udevControl); err == nil {
		deadline := time.Now().Add(udevWait)
		for time.Now().Before(deadline) {
			if nodeIs(m.Path, dev) {
				return nil
			}
			time.Sleep(20 * time.Millisecond)
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
		return fmt.Errorf("dmcrypt: create %s: %w", m.Path, err)
	}
	if !nodeIs(m.Path, dev) {
		return fmt.Errorf("dmcrypt: %s does not reach device %d:%d", m.Path, m.Major, m.Minor)
	}
	return nil
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
