package signature

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"slices"
)

// view reads the device with some ranges hidden: bytes in a hidden range
// read as zeros, the way libblkid hides a signature it has already reported
// so that the next probe sees what lies behind it.
type view struct {
	r           io.ReaderAt
	size        int64
	sectorSizes []int
	hidden      []span
}

type span struct{ off, end int64 }

// read returns n bytes at off, or nil when the range is not entirely inside
// the device (a signature cannot be there). Only a failing read is an error.
func (v *view) read(off int64, n int) ([]byte, error) {
	if off < 0 || n < 0 || off > v.size || int64(n) > v.size-off {
		return nil, nil
	}
	b := make([]byte, n)
	got, err := v.r.ReadAt(b, off)
	if got < n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read %d bytes at offset %d: %w", n, off, err)
	}
	for _, h := range v.hidden {
		lo, hi := max(h.off, off), min(h.end, off+int64(n))
		if lo < hi {
			clear(b[lo-off : hi-off])
		}
	}
	return b, nil
}

// has reports whether the bytes at off equal want.
func (v *view) has(off int64, want []byte) (bool, error) {
	b, err := v.read(off, len(want))
	if err != nil || b == nil {
		return false, err
	}
	return bytes.Equal(b, want), nil
}

func (v *view) hide(off, n int64) {
	v.hidden = append(v.hidden, span{off, off + n})
}

// keepVisible drops magics that are already hidden or all zeros: hiding
// them would change nothing, and every round of Probe must hide something
// new to converge.
func (v *view) keepVisible(s Signature) Signature {
	var ms []Magic
	for _, m := range s.Magics {
		if allZero(m.Bytes) || v.isHidden(m.Offset, int64(len(m.Bytes))) {
			continue
		}
		ms = append(ms, m)
	}
	s.Magics = ms
	return s
}

func (v *view) isHidden(off, n int64) bool {
	for _, h := range v.hidden {
		if off < h.end && h.off < off+n {
			return true
		}
	}
	return false
}

// magicAt is a Magic for the len(b) bytes found at off.
func magicAt(off int64, b []byte, role string) Magic {
	return Magic{Offset: off, Bytes: bytes.Clone(b), Role: role}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// sortMagics orders magics by offset.
func sortMagics(ms []Magic) []Magic {
	slices.SortFunc(ms, func(a, b Magic) int { return cmp.Compare(a.Offset, b.Offset) })
	return ms
}
