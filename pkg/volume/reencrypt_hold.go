package volume

import (
	"errors"
	"fmt"
	"slices"
)

// ErrReencrypting: the volume's header records a re-encryption that is
// under way or was interrupted; it cannot be opened (mapped with one key)
// until the re-encryption is finished. *ReencryptingError carries the
// progress.
var ErrReencrypting = errors.New("a re-encryption is under way or was interrupted")

// ReencryptingError is ErrReencrypting for one volume, with its progress
// and the command that finishes it.
type ReencryptingError struct {
	Ref         string // the volume's name, or its device
	Done, Total uint64 // bytes under the new key, bytes of data
	// Foreign is set when the re-encryption is one atrest cannot follow
	// (another tool's mode or resilience): it says why.
	Foreign error
	// Resilience is the reencrypt keyslot's area type (set with Foreign).
	Resilience string
	// Device is set for an encryption in place: the device to name in
	// the command that finishes it.
	Device string
}

func (e *ReencryptingError) Error() string {
	if e.Device != "" {
		return fmt.Sprintf("%s: an encryption in place is under way or was interrupted (%d of %d bytes done); it opens once it is finished: run atrest encrypt %s --name %s (docs/reencrypt.md)",
			e.Ref, e.Done, e.Total, e.Device, e.Ref)
	}
	if e.Foreign != nil {
		if e.Resilience != "" && !slices.Contains(cryptsetupResilience, e.Resilience) {
			return fmt.Sprintf("%s: %v (%v); the resilience type is unknown to cryptsetup 2.6 too, so no tool resumes it: the header is damaged or was written by another tool; restore a header backup of this same re-encryption if there is one (atrest header restore refuses any other) (docs/reencrypt.md)", e.Ref, ErrReencrypting, e.Foreign)
		}
		return fmt.Sprintf("%s: %v (%v); atrest cannot continue it: finish it with cryptsetup reencrypt --resume-only (docs/reencrypt.md)", e.Ref, ErrReencrypting, e.Foreign)
	}
	return fmt.Sprintf("%s: %v (%d of %d bytes done); it opens once the re-encryption is finished: run atrest reencrypt %s (docs/reencrypt.md)",
		e.Ref, ErrReencrypting, e.Done, e.Total, e.Ref)
}

// cryptsetupResilience are the area types of a reencrypt keyslot that
// cryptsetup 2.6 knows.
var cryptsetupResilience = []string{"checksum", "journal", "none", "datashift", "datashift-checksum", "datashift-journal"}

func (e *ReencryptingError) Unwrap() error { return ErrReencrypting }

// reencryptHold returns a *ReencryptingError when v's header records a
// re-encryption, nil otherwise. Open and atrestd refuse such a volume
// before asking the KMS for anything.
func reencryptHold(v *Volume) error {
	if v.Header == nil {
		return nil
	}
	if st, err := v.Header.EncryptionInPlace(); st != nil && err == nil {
		return &ReencryptingError{Ref: v.Ref(), Done: st.Done(), Total: st.Size, Device: v.Device}
	}
	st, err := v.Header.Reencryption()
	if st == nil && err == nil {
		return nil
	}
	e := &ReencryptingError{Ref: v.Ref(), Total: v.Header.Data.Length, Foreign: err}
	if st != nil {
		e.Done, e.Resilience = st.Done, st.Resilience
	}
	return e
}
