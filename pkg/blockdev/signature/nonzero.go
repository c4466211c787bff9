package signature

import (
	"context"
	"fmt"
	"io"
)

// NonZero is the weaker finding: the device holds data in a place where
// every known signature lives, yet no signature was recognised (an unknown
// filesystem, ZFS, BitLocker, a plain dm-crypt volume, raw database pages).
type NonZero struct {
	// Offset is the first non-zero byte found.
	Offset int64
}

func (n NonZero) String() string {
	return fmt.Sprintf("non-zero data at offset %#x", n.Offset)
}

// Regions ScanNonZero reads: the head and tail, where partition tables,
// superblocks and headers live, plus evenly spaced samples.
const (
	scanEdge    = 1 << 20
	scanSamples = 16
	scanSample  = 64 << 10
)

// ScanNonZero reads the first and last MiB of the device and 16 samples of
// 64 KiB spread across it, and returns the first non-zero byte found, or
// nil when all of it reads as zeros. It costs about 3 MiB of reads whatever
// the device size. It is not a substitute for Probe: a zero head says
// nothing about a signature elsewhere, and data anywhere else is not seen.
func ScanNonZero(ctx context.Context, r io.ReaderAt, size int64) (*NonZero, error) {
	for _, s := range scanSpans(size) {
		for off := s.off; off < s.end; off += scanSample {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			n := min(int64(scanSample), s.end-off)
			b := make([]byte, n)
			if got, err := r.ReadAt(b, off); int64(got) < n {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return nil, fmt.Errorf("signature: scan at offset %d: %w", off, err)
			}
			for i, c := range b {
				if c != 0 {
					return &NonZero{Offset: off + int64(i)}, nil
				}
			}
		}
	}
	return nil, nil
}

// scanSpans lists the regions in ascending order without overlaps.
func scanSpans(size int64) []span {
	if size <= 0 {
		return nil
	}
	var spans []span
	add := func(off, end int64) {
		off, end = max(off, 0), min(end, size)
		if off >= end {
			return
		}
		if n := len(spans); n > 0 && off <= spans[n-1].end {
			spans[n-1].end = max(spans[n-1].end, end)
			return
		}
		spans = append(spans, span{off, end})
	}
	add(0, scanEdge)
	for i := int64(1); i <= scanSamples; i++ {
		off := (size / (scanSamples + 1) * i) &^ 4095
		add(off, off+scanSample)
	}
	add(size-scanEdge, size)
	return spans
}
