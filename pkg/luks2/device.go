package luks2

import (
	"context"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/luks2/devlock"
)

// Reader is what reading a header needs: random reads and the device size.
type Reader interface {
	io.ReaderAt
	Size() (int64, error)
}

// Device is a Reader that can also be written and flushed. Sync must make
// every completed write durable before it returns: the crash-safety of
// header updates rests on it.
type Device interface {
	Reader
	io.WriterAt
	Sync() error
}

// Locker is implemented by devices that serialise header I/O with other
// processes. Read takes a shared lock, every write an exclusive one.
type Locker interface {
	Lock(ctx context.Context, exclusive bool) (release func() error, err error)
}

// Zeroer is implemented by devices that can zero a byte range faster than
// by writing zeros (BLKZEROOUT, fallocate). Format uses it to destroy what
// the metadata region held before.
type Zeroer interface {
	ZeroRange(off, n int64) error
}

// lock takes dev's lock when dev is a Locker; the returned release is
// never nil.
func lock(ctx context.Context, dev any, exclusive bool) (func(), error) {
	l, ok := dev.(Locker)
	if !ok {
		return func() {}, nil
	}
	release, err := l.Lock(ctx, exclusive)
	if err != nil {
		return nil, fmt.Errorf("luks2: %w", err)
	}
	return func() { release() }, nil
}

// File is a block device or regular file opened for the engine. It takes
// cryptsetup's locks (see package devlock) so that atrest and cryptsetup
// never interleave header I/O.
type File struct {
	f     *os.File
	path  string
	block bool
}

var (
	_ Device = (*File)(nil)
	_ Locker = (*File)(nil)
	_ Zeroer = (*File)(nil)
)

// OpenFile opens the block device or regular file at path, read-only unless
// writable is set.
func OpenFile(path string, writable bool) (*File, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("luks2: %w", err)
	}
	return NewFile(f, path)
}

// NewFile wraps f, opened from path, and takes it over: Close closes it.
// A caller that must know which device it reads (not just which path)
// opens f itself, checks it with fstat, and hands it over here.
func NewFile(f *os.File, path string) (*File, error) {
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("luks2: %w", err)
	}
	block := st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
	if !block && !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("luks2: %s: %w", path, blockdev.ErrUnsupported)
	}
	return &File{f: f, path: path, block: block}, nil
}

// Path returns the path the file was opened with.
func (d *File) Path() string { return d.path }

// IsBlockDevice reports whether the file is a block device.
func (d *File) IsBlockDevice() bool { return d.block }

// ReadAt implements io.ReaderAt.
func (d *File) ReadAt(p []byte, off int64) (int, error) { return d.f.ReadAt(p, off) }

// WriteAt implements io.WriterAt.
func (d *File) WriteAt(p []byte, off int64) (int, error) { return d.f.WriteAt(p, off) }

// Sync flushes written data to stable storage: fdatasync, which makes the
// written bytes (and any size or allocation change needed to read them)
// durable like fsync but does not wait for a journal commit of the
// modification time, the bulk of a synced header write's latency on an
// image file.
func (d *File) Sync() error {
	for {
		err := unix.Fdatasync(int(d.f.Fd()))
		if err != unix.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: d.path, Err: err}
			}
			return nil
		}
	}
}

// Close closes the file.
func (d *File) Close() error { return d.f.Close() }

// Size returns the device or file size in bytes.
func (d *File) Size() (int64, error) {
	if !d.block {
		st, err := d.f.Stat()
		if err != nil {
			return 0, err
		}
		return st.Size(), nil
	}
	var n uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n))); errno != 0 {
		return 0, fmt.Errorf("luks2: size of %s: %w", d.path, errno)
	}
	return int64(n), nil
}

// Lock takes cryptsetup's lock for this device, waiting until ctx is done.
func (d *File) Lock(ctx context.Context, exclusive bool) (func() error, error) {
	l, err := devlock.Acquire(ctx, d.path, exclusive)
	if err != nil {
		return nil, err
	}
	return l.Release, nil
}

// ZeroRange zeroes [off, off+n) (blockdev.ZeroRange: BLKZEROOUT on block
// devices, fallocate on regular files, writes of zeros where neither
// works).
func (d *File) ZeroRange(off, n int64) error {
	if err := blockdev.ZeroRange(d.f, off, n); err != nil {
		return fmt.Errorf("luks2: %w", err)
	}
	return nil
}
