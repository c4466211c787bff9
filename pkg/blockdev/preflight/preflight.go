// Package preflight decides whether a device may be formatted, and with
// --force makes it so: it is the first step of the format use case.
//
// Run resolves the path, refuses a device that anything uses (never
// overridable) or that is smaller than the format needs, opens it
// exclusively, and looks for signatures of what it already holds. Without
// Force, a signature refuses the format and so, by default, does non-zero
// data where signatures live; with Force the signatures are listed in
// Result.Found and Run writes nothing: the caller asks its KMS first and
// then has Result.Wipe erase their magic bytes (as `wipefs --all` would).
// The device stays open for the format to write. docs/preflight.md has
// the order of the checks and every refusal.
package preflight

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/blockdev/overwrite"
	"github.com/atrest/atrest/pkg/blockdev/signature"
)

// NonZeroPolicy says what to do with non-zero data that carries no known
// signature when Force is not set.
type NonZeroPolicy int

const (
	// RefuseNonZero (the default) refuses such a device with
	// *NonZeroError: it may hold a filesystem or volume atrest does not
	// know (ZFS, BitLocker, plain dm-crypt), and format must never destroy
	// data unless told to.
	RefuseNonZero NonZeroPolicy = iota
	// AllowNonZero formats over it.
	AllowNonZero
)

// Options tune Run.
type Options struct {
	// Force erases every signature found instead of refusing, and accepts
	// non-zero data. It never overrides an in-use refusal.
	Force bool
	// NonZero applies when Force is false.
	NonZero NonZeroPolicy
	// Progress receives the wipe's progress.
	Progress overwrite.Func
	// MinSize refuses a device smaller than this many bytes
	// (*TooSmallError), before the device is opened.
	MinSize int64
	// Checked, when set, is called once the device exists, is unused and
	// is large enough, before it is opened and read: the caller starts
	// there what only a device worth examining should cost (format's
	// Vault login runs beside the signature probe).
	Checked func()
}

// Result is a device that passed: open exclusively, ready to format.
type Result struct {
	// Handle is open read-write with O_EXCL (block devices) and the disk's
	// lock held; the caller formats through Handle.File and closes it.
	Handle *blockdev.Handle
	Device *blockdev.Device
	// Found are the signatures that Force lets pass and Wipe erases.
	Found []signature.Signature
	// Wiped are the signatures Wipe erased (empty until then, and when
	// there were none).
	Wiped []signature.Signature
	// NonZero is set when the device held non-zero data without a known
	// signature and the policy or Force let it pass.
	NonZero *signature.NonZero
	// Warnings are problems that did not stop the preflight, e.g. the
	// kernel refusing to re-read a wiped partition table.
	Warnings []string

	opts Options
}

var (
	// ErrSignatures: the device holds signatures and Force was not set
	// (*SignaturesError).
	ErrSignatures = errors.New("device already holds signatures")
	// ErrNonZero: the device holds non-zero data with no known signature
	// and the policy refuses it (*NonZeroError).
	ErrNonZero = errors.New("device holds data with no known signature")
	// ErrProbe: the device could not be read while looking for signatures;
	// nothing was written.
	ErrProbe = errors.New("could not read the device to look for signatures")
	// ErrTooSmall: the device is smaller than Options.MinSize
	// (*TooSmallError); nothing was opened or written.
	ErrTooSmall = errors.New("device too small")
)

// TooSmallError says how small the device is and what it needs.
type TooSmallError struct {
	Device    string
	Size, Min int64
}

func (e *TooSmallError) Error() string {
	return fmt.Sprintf("%s is too small: %d bytes (%s), a volume needs at least %d bytes (%s)",
		e.Device, e.Size, mibString(e.Size), e.Min, mibString(e.Min))
}

// Is matches ErrTooSmall.
func (e *TooSmallError) Is(target error) bool { return target == ErrTooSmall }

// mibString says n in MiB, with the bytes left over: "16 MiB + 4096 bytes".
func mibString(n int64) string {
	if rest := n % (1 << 20); rest != 0 {
		return fmt.Sprintf("%d MiB + %d bytes", n>>20, rest)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// SignaturesError names every signature found.
type SignaturesError struct {
	Device string
	Found  []signature.Signature
}

func (e *SignaturesError) Error() string {
	var s []string
	for _, sig := range e.Found {
		s = append(s, sig.String())
	}
	return fmt.Sprintf("%s already holds %s", e.Device, strings.Join(s, "; "))
}

// Is matches ErrSignatures.
func (e *SignaturesError) Is(target error) bool { return target == ErrSignatures }

// NonZeroError says where the data was found.
type NonZeroError struct {
	Device  string
	NonZero signature.NonZero
}

func (e *NonZeroError) Error() string {
	return fmt.Sprintf("%s holds %s but no signature atrest knows", e.Device, e.NonZero)
}

// Is matches ErrNonZero.
func (e *NonZeroError) Is(target error) bool { return target == ErrNonZero }

// Run checks the device at path; it writes nothing (Result.Wipe does,
// with Force). Its errors are the blockdev sentinels and typed errors
// (ErrNotFound, ErrUnsupported, ErrReadOnly, ErrInUse and the refusals
// under it, ErrBusy), ErrTooSmall, ErrSignatures, ErrNonZero and ErrProbe.
// On success the caller owns Result.Handle.
func Run(ctx context.Context, path string, opts Options) (*Result, error) {
	d, err := blockdev.Inspect(path)
	if err != nil {
		return nil, err
	}
	if err := d.CheckUnused(); err != nil {
		return nil, err
	}
	if d.Size < opts.MinSize {
		return nil, &TooSmallError{Device: d.Path, Size: d.Size, Min: opts.MinSize}
	}
	if opts.Checked != nil {
		opts.Checked()
	}
	h, err := blockdev.OpenExclusive(ctx, d)
	if err != nil {
		return nil, err
	}
	res, err := examine(ctx, h, opts)
	if err != nil {
		h.Close()
		return nil, err
	}
	return res, nil
}

func examine(ctx context.Context, h *blockdev.Handle, opts Options) (*Result, error) {
	d := h.Device
	res := &Result{Handle: h, Device: d, opts: opts}
	found, err := signature.Probe(ctx, h.File, d.Size, signature.Options{SectorSize: d.LogicalSectorSize})
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", d.Path, ErrProbe, err)
	}
	if len(found) == 0 {
		nz, err := signature.ScanNonZero(ctx, h.File, d.Size)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %w", d.Path, ErrProbe, err)
		}
		if nz != nil && !opts.Force && opts.NonZero == RefuseNonZero {
			return nil, &NonZeroError{Device: d.Path, NonZero: *nz}
		}
		res.NonZero = nz
		return res, nil
	}
	if !opts.Force {
		return nil, &SignaturesError{Device: d.Path, Found: found}
	}
	res.Found = found
	return res, nil
}

// Wipe erases the signatures in Found (nothing when there are none) and
// has the kernel re-read a wiped partition table. Its errors are those of
// signature.Wipe (an *overwrite.Error says how far a failed wipe got).
func (r *Result) Wipe(ctx context.Context) error {
	if len(r.Found) == 0 || len(r.Wiped) > 0 {
		return nil
	}
	d := r.Device
	err := signature.Wipe(ctx, r.Handle.File, d.Size, r.Found, signature.WipeOptions{
		SectorSize: d.LogicalSectorSize,
		Progress:   r.opts.Progress,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", d.Path, err)
	}
	r.Wiped = r.Found
	for _, s := range r.Found {
		if s.IsPartitionTable() {
			if err := r.Handle.RereadPartitions(); err != nil {
				r.Warnings = append(r.Warnings, err.Error())
			}
			break
		}
	}
	return nil
}
