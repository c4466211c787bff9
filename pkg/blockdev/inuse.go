package blockdev

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// CheckUnused returns nil when nothing on this machine uses the device, or
// the first refusal found, checking in this order: mounted (directly, or
// as a member of a mounted btrfs), active swap, held by a stacked device
// (its holders, with what they are used for), a partition in use (each
// partition checked the same way), a loop device in use that reads from it.
// A regular file is checked for swap and loop backing only.
//
// Every refusal matches ErrInUse and its own sentinel (ErrMounted,
// ErrSwap, ErrHeld, ErrPartitionInUse, ErrBackingInUse) and is a typed
// error naming what was found. The checks read this mount namespace's
// mountinfo; OpenExclusive catches what they cannot see.
func (d *Device) CheckUnused() error { return host.checkUnused(d) }

// usageCheck is one consistent look at the machine: mounts and swaps are
// read once per check.
type usageCheck struct {
	s       system
	mounts  []mount
	swaps   []string
	btrfs   map[string]string
	loops   map[string]string
	visited map[string]bool
}

func (s system) checkUnused(d *Device) error {
	c := &usageCheck{s: s, btrfs: s.btrfsMembers(), loops: s.loops(), visited: map[string]bool{}}
	f, err := os.Open(s.mountinfo)
	if err != nil {
		return fmt.Errorf("blockdev: read mounts: %w", err)
	}
	c.mounts, err = parseMountinfo(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("blockdev: %s: %w", s.mountinfo, err)
	}
	// A kernel without swap support has no /proc/swaps: nothing is swap.
	if f, err := os.Open(s.swaps); err == nil {
		c.swaps, err = parseSwaps(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("blockdev: %s: %w", s.swaps, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("blockdev: read swaps: %w", err)
	}

	if d.Kind == RegularFile {
		same := func(p string) bool {
			var st unix.Stat_t
			return unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Dev == d.dev && st.Ino == d.ino
		}
		for _, sw := range c.swaps {
			if same(sw) {
				return &SwapError{Device: d.Path}
			}
		}
		return c.loopsOver(d.Path, same)
	}
	return c.usage(d.node, d.Path)
}

// usage checks one block device and, recursively, what is stacked on it.
func (c *usageCheck) usage(n node, display string) error {
	if c.visited[n.name] {
		return nil
	}
	c.visited[n.name] = true
	if err := c.mounted(n, display); err != nil {
		return err
	}
	for _, sw := range c.swaps {
		if isNode(sw, n) {
			return &SwapError{Device: display}
		}
	}
	if hs := n.holders(); len(hs) > 0 {
		h := hs[0]
		e := &HeldError{Device: display, Holder: "/dev/" + h, Name: c.s.holderName(h)}
		if hn, err := c.s.nodeByName(h); err == nil {
			e.Cause = c.usage(hn, hn.path())
		}
		return e
	}
	for _, p := range n.partitions() {
		pn, err := c.s.nodeByName(p)
		if err != nil {
			continue
		}
		if err := c.usage(pn, pn.path()); err != nil {
			return &PartitionInUseError{Device: display, Partition: pn.path(), Cause: err}
		}
	}
	return c.loopsOver(display, func(p string) bool { return isNode(p, n) })
}

// loopsOver refuses when a loop device whose backing file satisfies same
// is itself in use.
func (c *usageCheck) loopsOver(display string, same func(string) bool) error {
	names := make([]string, 0, len(c.loops))
	for l := range c.loops {
		names = append(names, l)
	}
	slices.Sort(names)
	for _, l := range names {
		if !same(c.loops[l]) {
			continue
		}
		ln, err := c.s.nodeByName(l)
		if err != nil {
			continue
		}
		if err := c.usage(ln, ln.path()); err != nil {
			return &BackingInUseError{Device: display, Loop: ln.path(), Cause: err}
		}
	}
	return nil
}

func (c *usageCheck) mounted(n node, display string) error {
	for _, m := range c.mounts {
		if m.major == n.major && m.minor == n.minor {
			return &MountedError{Device: display, MountPoint: m.mountPoint, FSType: m.fsType}
		}
	}
	// btrfs (and other filesystems with anonymous device numbers) show
	// 0:N in mountinfo; their source names the device.
	for _, m := range c.mounts {
		if m.major == 0 && strings.HasPrefix(m.source, "/dev/") && isNode(m.source, n) {
			return &MountedError{Device: display, MountPoint: m.mountPoint, FSType: m.fsType}
		}
	}
	fsid, ok := c.btrfs[n.name]
	if !ok {
		return nil
	}
	e := &MountedError{Device: display, FSType: "btrfs", Via: "btrfs filesystem " + fsid}
	for _, m := range c.mounts {
		if m.fsType != "btrfs" || !strings.HasPrefix(m.source, "/dev/") {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(m.source, &st) != nil {
			continue
		}
		if src, err := c.s.nodeByDev(unix.Major(st.Rdev), unix.Minor(st.Rdev)); err == nil && c.btrfs[src.name] == fsid {
			e.MountPoint = m.mountPoint
			break
		}
	}
	return e
}

// isNode reports whether path is a block device node for n.
func isNode(path string, n node) bool {
	var st unix.Stat_t
	return unix.Stat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK &&
		unix.Major(st.Rdev) == n.major && unix.Minor(st.Rdev) == n.minor
}
