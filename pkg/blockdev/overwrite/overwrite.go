// Package overwrite writes zeros (or bytes from a source) over ranges of a
// device or file, in bounded chunks, reporting progress through a callback
// and flushing to stable storage before it returns.
//
// It is the one mechanism atrest uses for destructive writes that a user
// waits on: the signature wipe behind `format --force` (a few bytes at a
// handful of offsets) and the large overwrites of `erase` (whole keyslot
// areas). Callers show progress from the callback; they never reimplement
// the loop.
package overwrite

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// DefaultChunkSize bounds each write when Options.ChunkSize is 0: large
// enough to stream at device speed, small enough that progress and
// cancellation are responsive.
const DefaultChunkSize = 1 << 20

// Range is a byte range of the target with a label that progress reports
// carry (e.g. "crypto_LUKS magic at 0x4000").
type Range struct {
	Offset int64
	Length int64
	Label  string
}

// End is the offset just past the range.
func (r Range) End() int64 { return r.Offset + r.Length }

// Progress is one report: Done of Total bytes are written, and Range is the
// range being written (or just finished).
type Progress struct {
	Done  int64
	Total int64
	Range Range
}

// Func receives progress reports. It runs on the writing goroutine, so it
// must return quickly.
type Func func(Progress)

// Target is what overwrite writes to; *os.File satisfies it.
type Target interface {
	io.WriterAt
	// Sync flushes written data to stable storage (fsync).
	Sync() error
}

// Options tune Write.
type Options struct {
	// ChunkSize is the largest single write; DefaultChunkSize when 0.
	ChunkSize int
	// Source supplies the bytes to write (e.g. crypto/rand.Reader); zeros
	// when nil.
	Source io.Reader
	// Progress, when set, is called once before the first write (Done 0)
	// and after every chunk.
	Progress Func
}

// Error reports a failed overwrite and exactly how far it got. When Sync is
// false, every range before Range was written completely, Range was written
// up to Written bytes, and nothing after it was touched. When Sync is true,
// every range was written but the final fsync failed, so whether the bytes
// reached stable storage is unknown.
type Error struct {
	Range   Range
	Written int64
	Sync    bool
	Err     error
}

func (e *Error) Error() string {
	if e.Sync {
		return fmt.Sprintf("overwrite: everything written, but sync failed: %v", e.Err)
	}
	return fmt.Sprintf("overwrite: %s (offset %#x, %d of %d bytes written): %v",
		e.Range.Label, e.Range.Offset, e.Written, e.Range.Length, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrBadRange is returned before anything is written when a range has a
// negative offset or length.
var ErrBadRange = errors.New("overwrite: negative offset or length")

// Write overwrites every range in order, then syncs t. It checks ctx between
// chunks; a cancelled context stops it with an *Error naming the range it
// stopped in. Ranges are validated before the first write.
func Write(ctx context.Context, t Target, ranges []Range, opts Options) error {
	var total int64
	for _, r := range ranges {
		if r.Offset < 0 || r.Length < 0 {
			return fmt.Errorf("%w: %s at %d, length %d", ErrBadRange, r.Label, r.Offset, r.Length)
		}
		total += r.Length
	}
	chunk := opts.ChunkSize
	if chunk <= 0 {
		chunk = DefaultChunkSize
	}
	report := func(p Progress) {
		if opts.Progress != nil {
			opts.Progress(p)
		}
	}
	var first Range
	if len(ranges) > 0 {
		first = ranges[0]
	}
	report(Progress{Done: 0, Total: total, Range: first})

	buf := make([]byte, min(int64(chunk), max(maxLen(ranges), 1)))
	var done int64
	for _, r := range ranges {
		var written int64
		for written < r.Length {
			if err := ctx.Err(); err != nil {
				return &Error{Range: r, Written: written, Err: err}
			}
			n := min(int64(len(buf)), r.Length-written)
			p := buf[:n]
			if opts.Source != nil {
				if _, err := io.ReadFull(opts.Source, p); err != nil {
					return &Error{Range: r, Written: written, Err: fmt.Errorf("read source: %w", err)}
				}
			}
			m, err := t.WriteAt(p, r.Offset+written)
			written += int64(m)
			done += int64(m)
			if err != nil {
				return &Error{Range: r, Written: written, Err: err}
			}
			report(Progress{Done: done, Total: total, Range: r})
		}
	}
	if err := t.Sync(); err != nil {
		return &Error{Sync: true, Err: err}
	}
	return nil
}

func maxLen(ranges []Range) int64 {
	var m int64
	for _, r := range ranges {
		m = max(m, r.Length)
	}
	return m
}
