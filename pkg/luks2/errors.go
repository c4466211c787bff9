package luks2

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinels callers branch on. Errors returned by this package wrap them
// (test with errors.Is) and add what exactly was found.
var (
	// ErrNotLUKS: neither header copy carries a LUKS magic.
	ErrNotLUKS = errors.New("luks2: no LUKS header")
	// ErrHeaderUnreadable: the device failed the reads of both header
	// copies (an I/O error, not missing or damaged bytes): whether it
	// holds a LUKS header is unknown, so nothing may treat it as blank.
	ErrHeaderUnreadable = errors.New("luks2: the header cannot be read from the device")
	// ErrLUKS1: the device holds a LUKS1 header, which atrest does not handle
	// (cryptsetup convert --type luks2 upgrades it).
	ErrLUKS1 = errors.New("luks2: device holds a LUKS1 header")
	// ErrHeaderDamaged: a LUKS2 header is there, but neither copy is valid;
	// only a header backup can bring the volume back.
	ErrHeaderDamaged = errors.New("luks2: both header copies are damaged")
	// ErrAmbiguousSignatures: a header copy needs repair (damaged or
	// older) and the header region carries another known signature
	// (filesystem, LVM label, partition table), so the valid copy is not
	// trusted to be the volume's: nothing reads it as one, nothing repairs
	// from it.
	// Restoring a header backup with force is the way back, once it is
	// clear which of the two the device should be.
	ErrAmbiguousSignatures = errors.New("luks2: device contains ambiguous signatures, cannot auto-recover")
	// ErrInvalidHeader: a header (or a change to one) breaks a LUKS2 rule
	// cryptsetup enforces.
	ErrInvalidHeader = errors.New("luks2: invalid header")
	// ErrKeyRejected: the passphrase opens no keyslot it was tried on.
	ErrKeyRejected = errors.New("luks2: no keyslot accepts this passphrase")
	// ErrUnboundKeyslot: the keyslot is not bound to the data segment (no
	// digest covers both), so whatever it stores is not the volume key.
	// Errors wrapping it also wrap ErrKeyRejected.
	ErrUnboundKeyslot = errors.New("luks2: keyslot is not bound to the data segment")
	// ErrWrongVolumeKey: a volume key does not match the header's digest.
	ErrWrongVolumeKey = errors.New("luks2: volume key does not match the header digest")
	// ErrNoSuchKeyslot, ErrNoSuchToken: the numbered object does not exist.
	ErrNoSuchKeyslot = errors.New("luks2: no such keyslot")
	ErrNoSuchToken   = errors.New("luks2: no such token")
	// ErrSlotInUse: a keyslot or token number asked for is taken.
	ErrSlotInUse = errors.New("luks2: keyslot or token number already in use")
	// ErrNoSpace: no free keyslot number, keyslot area or JSON space left.
	ErrNoSpace = errors.New("luks2: no space left in the header")
	// ErrUnsupported: a valid header uses something atrest cannot compute
	// (a KDF, hash, cipher or keyslot type).
	ErrUnsupported = errors.New("luks2: unsupported")
	// ErrUnmetRequirements: the header lists mandatory requirements (such as
	// an unfinished reencryption) that atrest does not implement; reading
	// works, opening and changing do not.
	ErrUnmetRequirements = errors.New("luks2: unmet mandatory requirements")
	// ErrConcurrentUpdate: the header on the device changed since it was
	// read; read it again and redo the change.
	ErrConcurrentUpdate = errors.New("luks2: header changed on the device since it was read")
	// ErrUUIDMismatch: a header backup belongs to another volume.
	ErrUUIDMismatch = errors.New("luks2: backup UUID differs from the device's")
	// ErrDeviceTooSmall: the device cannot hold the header, its keyslots
	// area or a data segment.
	ErrDeviceTooSmall = errors.New("luks2: device too small")
)

// CopyError says why one header copy was not usable.
type CopyError struct {
	Copy   string // "primary" or "secondary"
	Offset uint64
	Err    error
}

// Error names the copy, its offset and what is wrong with it.
func (e *CopyError) Error() string {
	return fmt.Sprintf("%s header at offset %d: %v", e.Copy, e.Offset, e.Err)
}

// Unwrap returns what is wrong with the copy.
func (e *CopyError) Unwrap() error { return e.Err }

// DamagedError is returned (wrapping ErrHeaderDamaged) when no copy is valid;
// it lists what is wrong with each.
type DamagedError struct {
	Copies []*CopyError
}

// Error lists what is wrong with each copy.
func (e *DamagedError) Error() string {
	parts := make([]string, len(e.Copies))
	for i, c := range e.Copies {
		parts[i] = c.Error()
	}
	return ErrHeaderDamaged.Error() + ": " + strings.Join(parts, "; ")
}

// Unwrap lets errors.Is find ErrHeaderDamaged and what damaged each copy
// (ErrInvalidHeader for a copy that breaks a rule).
func (e *DamagedError) Unwrap() []error {
	errs := []error{ErrHeaderDamaged}
	for _, c := range e.Copies {
		errs = append(errs, c)
	}
	return errs
}

// RequirementsError lists the mandatory requirements atrest does not meet.
type RequirementsError struct {
	Names []string
}

// Error lists the requirements.
func (e *RequirementsError) Error() string {
	return fmt.Sprintf("%v: %s", ErrUnmetRequirements, strings.Join(e.Names, ", "))
}

// Unwrap returns ErrUnmetRequirements.
func (e *RequirementsError) Unwrap() error { return ErrUnmetRequirements }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidHeader, fmt.Sprintf(format, args...))
}
