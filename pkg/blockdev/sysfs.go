package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// system is where the kernel's facts are read from. Tests point it at a
// fake tree; everything else uses host.
type system struct {
	sys       string // sysfs mount, /sys
	mountinfo string // /proc/self/mountinfo
	swaps     string // /proc/swaps
}

var host = system{sys: "/sys", mountinfo: "/proc/self/mountinfo", swaps: "/proc/swaps"}

// node is one block device as sysfs knows it.
type node struct {
	name         string // kernel name: loop3, sda1, dm-0
	major, minor uint32
	dir          string // resolved sysfs directory
}

// path is the device node the kernel's devtmpfs creates for it.
func (n node) path() string { return "/dev/" + n.name }

func (s system) nodeByDev(major, minor uint32) (node, error) {
	link := filepath.Join(s.sys, "dev", "block", fmt.Sprintf("%d:%d", major, minor))
	dir, err := filepath.EvalSymlinks(link)
	if err != nil {
		return node{}, fmt.Errorf("no sysfs entry for block device %d:%d (is /sys mounted?): %w", major, minor, err)
	}
	return node{name: filepath.Base(dir), major: major, minor: minor, dir: dir}, nil
}

func (s system) nodeByName(name string) (node, error) {
	dir, err := filepath.EvalSymlinks(filepath.Join(s.sys, "class", "block", name))
	if err != nil {
		return node{}, err
	}
	maj, min, err := parseDevT(readAttr(dir, "dev"))
	if err != nil {
		return node{}, fmt.Errorf("sysfs %s/dev: %w", name, err)
	}
	return node{name: name, major: maj, minor: min, dir: dir}, nil
}

// readAttr returns a sysfs attribute without its trailing newline, or ""
// when it does not exist. sysfs hands an attribute out in one read of at
// most a page, so this is an open, a read and a close, without an os.File
// (os.ReadFile adds a poller registration, an fstat and a second read):
// a format's preflight reads one per loop device of the machine. A longer
// file (only a test's tree has one) is read whole.
func readAttr(dir, name string) string {
	p := filepath.Join(dir, name)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	var buf [4096]byte
	n, err := unix.Read(fd, buf[:])
	for err == unix.EINTR {
		n, err = unix.Read(fd, buf[:])
	}
	unix.Close(fd)
	if err != nil || n <= 0 {
		return ""
	}
	if n == len(buf) {
		b, err := os.ReadFile(p)
		if err != nil {
			return ""
		}
		return strings.TrimRight(string(b), "\n")
	}
	return strings.TrimRight(string(buf[:n]), "\n")
}

func parseDevT(s string) (uint32, uint32, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("bad device number %q", s)
	}
	maj, err1 := strconv.ParseUint(a, 10, 32)
	min, err2 := strconv.ParseUint(b, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("bad device number %q", s)
	}
	return uint32(maj), uint32(min), nil
}

func (n node) isPartition() bool {
	_, err := os.Stat(filepath.Join(n.dir, "partition"))
	return err == nil
}

// queueDir holds the request queue attributes; a partition shares its
// disk's.
func (n node) queueDir() string {
	if n.isPartition() {
		return filepath.Join(filepath.Dir(n.dir), "queue")
	}
	return filepath.Join(n.dir, "queue")
}

// partitions lists the kernel names of n's partitions.
func (n node) partitions() []string {
	var out []string
	ents, _ := os.ReadDir(n.dir)
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(n.dir, e.Name(), "partition")); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// holders lists the kernel names of the devices stacked on n.
func (n node) holders() []string {
	var out []string
	ents, _ := os.ReadDir(filepath.Join(n.dir, "holders"))
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// holderName is a holder's own name: the device-mapper name, or "" for
// holders without one.
func (s system) holderName(name string) string {
	return readAttr(filepath.Join(s.sys, "class", "block", name, "dm"), "name")
}

// loops lists every attached loop device with its backing file path.
func (s system) loops() map[string]string {
	out := map[string]string{}
	ents, _ := os.ReadDir(filepath.Join(s.sys, "class", "block"))
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		dir := filepath.Join(s.sys, "class", "block", e.Name(), "loop")
		if f := readAttr(dir, "backing_file"); f != "" {
			out[e.Name()] = f
		}
	}
	return out
}

// btrfsMembers maps each member device of every mounted btrfs filesystem
// to the filesystem's UUID (/sys/fs/btrfs/<uuid>/devices/<name> exists
// while the filesystem is mounted).
func (s system) btrfsMembers() map[string]string {
	out := map[string]string{}
	fss, _ := os.ReadDir(filepath.Join(s.sys, "fs", "btrfs"))
	for _, fs := range fss {
		devs, err := os.ReadDir(filepath.Join(s.sys, "fs", "btrfs", fs.Name(), "devices"))
		if err != nil {
			continue
		}
		for _, d := range devs {
			out[d.Name()] = fs.Name()
		}
	}
	return out
}
