package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ZeroRange zeroes [off, off+n) of f: BLKZEROOUT on a block device (the
// device offloads it when it can: WRITE ZEROES, a loop device's
// fallocate), fallocate on a regular file, and plain writes of zeros
// where neither is supported.
func ZeroRange(f *os.File, off, n int64) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0 {
		r := [2]uint64{uint64(off), uint64(n)}
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r[0]))); errno != 0 {
			err = errno
		}
	} else {
		err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err != nil {
			err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		}
	}
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("blockdev: zero %s: %w", f.Name(), err)
	}
	return WriteZeros(f, off, n)
}

// WriteZeros writes n zero bytes at off, a MiB at a time.
func WriteZeros(w io.WriterAt, off, n int64) error {
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		m := min(n, int64(len(buf)))
		if _, err := w.WriteAt(buf[:m], off); err != nil {
			return err
		}
		off += m
		n -= m
	}
	return nil
}

// ZeroRange zeroes [off, off+n) of the device (see ZeroRange): a Handle
// is a luks2.Zeroer, so a format through it clears the metadata region
// with one BLKZEROOUT instead of 16 MiB of writes.
func (h *Handle) ZeroRange(off, n int64) error { return ZeroRange(h.File, off, n) }
