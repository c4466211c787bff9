package volume

import (
	"errors"
	"fmt"
)

// Sentinels of the use-case layer. Errors from the layers below keep their
// own sentinels (luks2.ErrKeyRejected, kms.ErrUnavailable, ...).
var (
	// ErrNotFound: no device, volume name or UUID matches.
	ErrNotFound = errors.New("volume not found")
	// ErrNotManaged: a LUKS2 volume without an atrest token.
	ErrNotManaged = errors.New("not an atrest volume (no atrest token in its LUKS2 header)")
	// ErrNameInUse: the mapping name belongs to another volume.
	ErrNameInUse = errors.New("volume name already in use")
	// ErrLocked: another atrest process is changing this volume.
	ErrLocked = errors.New("volume locked by another atrest process")
	// ErrNoRecovery: the volume has no recovery keyslot.
	ErrNoRecovery = errors.New("volume has no recovery key")
	// ErrInvalidArgument: a name, mode or option the caller gave is not
	// acceptable.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotConfirmed: a destructive operation lacks its confirmation.
	ErrNotConfirmed = errors.New("not confirmed")
	// ErrVerify: a change was written but the volume did not open with the
	// new key material; the change was rolled back.
	ErrVerify = errors.New("verification of the new key material failed")
)

// StageError reports a use case that failed part-way and says what state
// the device was left in, in words an operator can act on.
type StageError struct {
	// Op is the use case ("format", "rekey", ...), Device the device.
	Op, Device string
	// State describes the device now, e.g. "nothing was written".
	State string
	Err   error
}

func (e *StageError) Error() string {
	return fmt.Sprintf("%s %s: %v (%s)", e.Op, e.Device, e.Err, e.State)
}

// Unwrap returns the cause.
func (e *StageError) Unwrap() error { return e.Err }
