package signature

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/atrest/atrest/pkg/blockdev/overwrite"
)

// Device is what Wipe reads and writes; *os.File satisfies it.
type Device interface {
	io.ReaderAt
	overwrite.Target
}

// WipeOptions tune Wipe.
type WipeOptions struct {
	// SectorSize is passed to the confirming Probe (see Options).
	SectorSize int
	// Progress receives a report before the first write and after each
	// magic is erased.
	Progress overwrite.Func
}

// ErrChanged means a magic no longer holds the bytes Probe found: the
// device changed after it was probed, and Wipe wrote nothing.
var ErrChanged = errors.New("signature: device changed since it was probed")

// NotClearedError is returned when the confirming probe after a wipe still
// finds signatures. The erased magics stay erased; Left is what remains.
type NotClearedError struct {
	Left []Signature
}

func (e *NotClearedError) Error() string {
	var names []string
	for _, s := range e.Left {
		names = append(names, s.String())
	}
	return "signature: still present after wipe: " + strings.Join(names, "; ")
}

// Wipe erases the magic bytes of every signature in sigs — exactly those
// bytes, nothing around them — syncs, and probes again to confirm that
// nothing is left. It is what `wipefs --all` does.
//
// Before writing anything it re-reads every magic and returns ErrChanged if
// one differs from what Probe saw, and any read error, so a failed or stale
// detection never leads to a partial wipe. A failure while writing is an
// *overwrite.Error saying which magic it stopped at; the ones before it are
// erased, the ones after it untouched.
func Wipe(ctx context.Context, d Device, size int64, sigs []Signature, opts WipeOptions) error {
	var ranges []overwrite.Range
	for _, s := range sigs {
		for _, m := range s.Magics {
			if m.Offset < 0 || int64(len(m.Bytes)) > size-m.Offset {
				return fmt.Errorf("signature: %s magic at %#x lies outside the %d-byte device", s.Type, m.Offset, size)
			}
			cur := make([]byte, len(m.Bytes))
			if n, err := d.ReadAt(cur, m.Offset); n < len(cur) {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("signature: re-read %s magic at %#x: %w", s.Type, m.Offset, err)
			}
			if !bytes.Equal(cur, m.Bytes) {
				return fmt.Errorf("%w: %s magic at %#x reads %x, probed %x", ErrChanged, s.Type, m.Offset, cur, m.Bytes)
			}
			label := fmt.Sprintf("%s magic at %#x", s.Type, m.Offset)
			if m.Role != "" {
				label += " (" + m.Role + ")"
			}
			ranges = append(ranges, overwrite.Range{Offset: m.Offset, Length: int64(len(m.Bytes)), Label: label})
		}
	}
	if len(ranges) == 0 {
		return nil
	}
	if err := overwrite.Write(ctx, d, ranges, overwrite.Options{Progress: opts.Progress}); err != nil {
		return fmt.Errorf("signature: wipe: %w", err)
	}
	left, err := Probe(ctx, d, size, Options{SectorSize: opts.SectorSize})
	if err != nil {
		return fmt.Errorf("signature: confirm wipe: %w", err)
	}
	if len(left) > 0 {
		return &NotClearedError{Left: left}
	}
	return nil
}
