package signature

import (
	"context"
	"testing"
)

// dotted reads as zeros except for single 0xFF bytes at the given offsets,
// so a large device costs no memory.
type dotted struct{ at []int64 }

func (d dotted) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	for _, a := range d.at {
		if a >= off && a < off+int64(len(p)) {
			p[a-off] = 0xFF
		}
	}
	return len(p), nil
}

func TestScanNonZero(t *testing.T) {
	const size = 10 << 30 // a 10 GiB device
	sample := (int64(size) / 17 * 5) &^ 4095
	for _, c := range []struct {
		name string
		at   []int64
		want int64 // -1: nothing found
	}{
		{"blank", nil, -1},
		{"boot sector", []int64{510}, 510},
		{"last byte", []int64{size - 1}, size - 1},
		{"inside a sample", []int64{sample + 100}, sample + 100},
		{"first of two", []int64{size - 10, 4096}, 4096},
		// Between samples the scan is blind by design: it bounds the
		// cost at about 3 MiB whatever the size.
		{"between samples", []int64{sample - 4096}, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			nz, err := ScanNonZero(context.Background(), dotted{c.at}, size)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.want < 0 && nz != nil:
				t.Fatalf("found %v, want nothing", nz)
			case c.want >= 0 && (nz == nil || nz.Offset != c.want):
				t.Fatalf("found %v, want offset %#x", nz, c.want)
			}
		})
	}
}

func TestScanSpansStayInsideTinyDevices(t *testing.T) {
	for _, size := range []int64{1, 511, 4096, 1 << 20, 3 << 20} {
		var prev int64
		for _, s := range scanSpans(size) {
			if s.off < prev || s.end > size || s.off >= s.end {
				t.Fatalf("size %d: bad span %+v after %d", size, s, prev)
			}
			prev = s.end
		}
		if prev != size && size <= 2<<20 {
			t.Fatalf("size %d: spans end at %d, want the whole device", size, prev)
		}
	}
}
