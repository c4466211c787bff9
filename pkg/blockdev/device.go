// Package blockdev answers what atrest must know about a device before it
// writes to it: what the path really is (a block device or a regular file,
// after symlinks such as /dev/disk/by-id/…), its size and sector sizes,
// its place among other devices (partitions, holders, loop backing), and
// whether anything uses it — mounted, swap, held by a device-mapper or md
// device, a partition in use, a loop device reading from it. It opens
// devices for formatting with O_EXCL so the kernel itself refuses a device
// that something has claimed.
//
// Everything comes from stat, ioctls, sysfs and procfs; no cgo, no external
// programs, so it works in an initramfs with a minimal userspace.
package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kind is what a path resolves to.
type Kind int

// Kinds Inspect accepts.
const (
	BlockDevice Kind = iota + 1
	RegularFile
)

func (k Kind) String() string {
	switch k {
	case BlockDevice:
		return "block device"
	case RegularFile:
		return "regular file"
	}
	return "unknown"
}

// Device is the facts about one block device or regular file.
type Device struct {
	// Path is the absolute path with every symlink resolved.
	Path string
	Kind Kind
	// Size in bytes.
	Size int64
	// LogicalSectorSize is the smallest addressable unit; 512 for a
	// regular file (what a loop device over it reports by default).
	LogicalSectorSize int
	// PhysicalSectorSize is the device's internal unit; for a regular file
	// the filesystem's preferred I/O size (st_blksize).
	PhysicalSectorSize int
	// ReadOnly: the kernel marks the block device read-only, or the file is
	// not writable.
	ReadOnly bool

	// The rest describes block devices only.

	// Major and Minor are the device number.
	Major, Minor uint32
	// Name is the kernel name (loop3, nvme0n1p2, dm-0).
	Name string
	// Partition: this is a partition of Disk (a kernel name).
	Partition bool
	Disk      string
	// Rotational: the kernel reports a spinning disk.
	Rotational bool
	// Loop is set for loop devices.
	Loop *LoopInfo
	// Holders are the kernel names of devices stacked on this one.
	Holders []string
	// Partitions are the kernel names of this disk's partitions.
	Partitions []string

	dev, ino uint64 // a regular file's identity
	node     node
}

// LoopInfo describes a loop device's binding.
type LoopInfo struct {
	// BackingFile is the file (or device) the loop device reads, as the
	// kernel recorded its path.
	BackingFile string
	// Offset and SizeLimit select the part of the backing file it shows.
	Offset, SizeLimit   int64
	Autoclear, PartScan bool
}

// Inspect resolves path and gathers the facts about what it names. It
// returns ErrNotFound or ErrUnsupported (wrapped with the path) when path is
// not a block device or regular file.
func Inspect(path string) (*Device, error) { return host.inspect(path) }

func (s system) inspect(path string) (*Device, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("blockdev: %s: %w", path, err)
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("blockdev: %s: %w", path, ErrNotFound)
		}
		return nil, fmt.Errorf("blockdev: %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(resolved, &st); err != nil {
		return nil, fmt.Errorf("blockdev: %s: %w", path, err)
	}
	d := &Device{Path: resolved}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		d.Kind = RegularFile
		d.Size = st.Size
		d.LogicalSectorSize = 512
		d.PhysicalSectorSize = int(st.Blksize)
		d.dev, d.ino = st.Dev, st.Ino
		d.ReadOnly = unix.Access(resolved, unix.W_OK) != nil
		return d, nil
	case unix.S_IFBLK:
		d.Kind = BlockDevice
	default:
		return nil, fmt.Errorf("blockdev: %s: %w", path, ErrUnsupported)
	}
	d.Major, d.Minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
	if err := d.queryIoctls(); err != nil {
		return nil, err
	}
	n, err := s.nodeByDev(d.Major, d.Minor)
	if err != nil {
		return nil, fmt.Errorf("blockdev: %s: %w", path, err)
	}
	d.node = n
	d.Name = n.name
	if d.Partition = n.isPartition(); d.Partition {
		d.Disk = filepath.Base(filepath.Dir(n.dir))
	}
	d.Rotational = readAttr(n.queueDir(), "rotational") == "1"
	d.Holders = n.holders()
	d.Partitions = n.partitions()
	if f := readAttr(filepath.Join(n.dir, "loop"), "backing_file"); f != "" {
		ld := filepath.Join(n.dir, "loop")
		d.Loop = &LoopInfo{
			BackingFile: f,
			Offset:      atoi64(readAttr(ld, "offset")),
			SizeLimit:   atoi64(readAttr(ld, "sizelimit")),
			Autoclear:   readAttr(ld, "autoclear") == "1",
			PartScan:    readAttr(ld, "partscan") == "1",
		}
	}
	return d, nil
}

// queryIoctls reads size, sector sizes and the read-only flag from the
// block device itself; it needs no sysfs and opens the device read-only
// without claiming it.
func (d *Device) queryIoctls() error {
	fd, err := unix.Open(d.Path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("blockdev: open %s: %w", d.Path, err)
	}
	defer unix.Close(fd)
	var size uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); e != 0 {
		return fmt.Errorf("blockdev: %s: BLKGETSIZE64: %w", d.Path, e)
	}
	d.Size = int64(size)
	if d.LogicalSectorSize, err = unix.IoctlGetInt(fd, unix.BLKSSZGET); err != nil {
		return fmt.Errorf("blockdev: %s: BLKSSZGET: %w", d.Path, err)
	}
	pb, err := unix.IoctlGetUint32(fd, unix.BLKPBSZGET)
	if err != nil {
		return fmt.Errorf("blockdev: %s: BLKPBSZGET: %w", d.Path, err)
	}
	d.PhysicalSectorSize = int(pb)
	ro, err := unix.IoctlGetInt(fd, unix.BLKROGET)
	if err != nil {
		return fmt.Errorf("blockdev: %s: BLKROGET: %w", d.Path, err)
	}
	d.ReadOnly = ro != 0
	return nil
}

func atoi64(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
