package volume

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/loop"
	"github.com/atrest/atrest/pkg/luks2"
)

// Device identity. A path names a device only at the instant it is
// resolved: a /dev/disk/by-* symlink can be pointed elsewhere and a node
// replaced between two opens. So the identity of what a volume's header
// was read from (fstat of that open file) is kept in the Volume; a use
// case opens the device once, refuses it when it is not that identity
// (ErrDeviceChanged), and does every later step (header reads and writes,
// keyslot opens, the loop device of an image, the dm table) through that
// one open file. The dm table names the device by the major:minor of that
// file, never by path.

// ErrDeviceChanged means the volume's device path names another device
// (or file) than the one its header was read from.
var ErrDeviceChanged = errors.New("the device path names another device than the one whose header was read")

// devID is what an open file is, whatever path led to it: a block
// device's number, or a regular file's inode.
type devID struct {
	block    bool
	rdev     uint64
	dev, ino uint64
}

func (id devID) String() string {
	if id.block {
		return "block device " + majMin(id.rdev)
	}
	return "file " + strconv.FormatUint(id.ino, 10) + " on " + majMin(id.dev)
}

func majMin(dev uint64) string {
	return strconv.FormatUint(uint64(unix.Major(dev)), 10) + ":" + strconv.FormatUint(uint64(unix.Minor(dev)), 10)
}

// fileID returns the identity of the open file f.
func fileID(f *os.File) (devID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return devID{}, fmt.Errorf("fstat %s: %w", f.Name(), err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		return devID{block: true, rdev: st.Rdev}, nil
	}
	return devID{dev: st.Dev, ino: st.Ino}, nil
}

// device is a volume's device opened once for a use case.
type device struct {
	*luks2.File
	// f is the same open file as File's; id what it is.
	f  *os.File
	id devID
}

// openPath opens the block device or image file at path (read-write when
// writable) and records what it is.
func openPath(path string, writable bool) (*device, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("luks2: %w", err)
	}
	id, err := fileID(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	lf, err := luks2.NewFile(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &device{File: lf, f: f, id: id}, nil
}

// open opens v's device for one use case, and refuses it with
// ErrDeviceChanged when it is not the device v's header was read from. A
// Volume made without an identity (a header re-read through a device
// already open) is not checked.
func (v *Volume) open(writable bool) (*device, error) {
	d, err := openPath(v.Device, writable)
	if err != nil {
		return nil, err
	}
	if v.id != (devID{}) && d.id != v.id {
		d.Close()
		return nil, fmt.Errorf("%w: %s was %s when its header was read and is %s now; nothing was done, run the command again", ErrDeviceChanged, v.Device, v.id, d.id)
	}
	return d, nil
}

// openDevice opens the volume's device for header changes.
func openDevice(v *Volume) (*luks2.File, error) {
	d, err := v.open(true)
	if err != nil {
		return nil, fmt.Errorf("open %s for writing: %w", v.Device, err)
	}
	return d.File, nil
}

// openAll opens the devices of vols read-only, each checked as open does;
// errs holds the failures.
func openAll(vols []*Volume) (devs []*device, errs []error) {
	devs, errs = make([]*device, len(vols)), make([]error, len(vols))
	for i, v := range vols {
		devs[i], errs[i] = v.open(false)
	}
	return devs, errs
}

func closeAll(devs []*device) {
	for _, d := range devs {
		if d != nil {
			d.Close()
		}
	}
}

// fileDevice adapts the preflight's exclusive handle to luks2.Device and
// luks2.Zeroer, so a format clears the metadata region with BLKZEROOUT
// (fallocate on an image file) rather than 16 MiB of writes.
type fileDevice struct {
	*os.File
	h    *blockdev.Handle
	size int64
}

var _ luks2.Zeroer = fileDevice{}

func (d fileDevice) Size() (int64, error)         { return d.size, nil }
func (d fileDevice) ZeroRange(off, n int64) error { return d.h.ZeroRange(off, n) }

// blockDevice returns the block device to map d's volume on, held open:
// d itself, or a loop device attached to d's image file (as cryptsetup
// does) — attached through d's open file, so it is backed by exactly the
// file whose header was read. The loop device detaches itself once the
// mapping on it is removed.
func blockDevice(d *device, readOnly bool) (dev *os.File, release func(), err error) {
	if d.id.block {
		return d.f, func() {}, nil
	}
	// The loop device is writable only if the file it is given is: open
	// the same file again (not the path) for writing.
	bf := d.f
	if !readOnly {
		if bf, err = os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(d.f.Fd())), os.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
			return nil, nil, fmt.Errorf("reopen %s for writing: %w", d.Path(), err)
		}
		defer bf.Close()
		if id, err := fileID(bf); err != nil || id != d.id {
			return nil, nil, fmt.Errorf("%w: %s reopened as %s", ErrDeviceChanged, d.Path(), id)
		}
	}
	l, err := loop.AttachFile(bf, d.Path(), loop.Options{ReadOnly: readOnly})
	if err != nil {
		return nil, nil, fmt.Errorf("attach %s to a loop device: %w", d.Path(), err)
	}
	// Detach while the mapping holds the loop device only marks it for
	// autoclear: the kernel detaches it when the mapping lets go.
	return l.File(), func() { _ = l.Detach() }, nil
}
