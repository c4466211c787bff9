// Package health reads the alertable facts of a volume's Status (the one
// `atrest status` prints): atrestd's per-volume gauges and the
// textfile-collector lines of `atrest status --prometheus` both come from
// here, so the two always agree.
package health

import "github.com/atrest/atrest/pkg/volume"

// Header backup states.
const (
	BackupMissing = "missing"
	BackupStale   = "stale" // older than the header on the device
	BackupCurrent = "current"
)

// Volume is what the gauges say of one volume.
type Volume struct {
	UUID, Name string
	// Backup is BackupMissing, BackupStale or BackupCurrent.
	Backup string
	// RecoveryMissing: the token records a recovery key (its escrow) but
	// no keyslot holds one, the problem Status itself reports.
	RecoveryMissing bool
	// ResealNeeded: a TPM keyslot's PCRs no longer match.
	ResealNeeded bool
}

// Of reads s.
func Of(s volume.Status) Volume {
	h := Volume{UUID: s.UUID, Name: s.Name, Backup: BackupCurrent}
	switch {
	case !s.Backup.Present:
		h.Backup = BackupMissing
	case !s.Backup.Current:
		h.Backup = BackupStale
	}
	h.RecoveryMissing = s.KMS != nil && s.Recovery.Escrow != "" && !s.Recovery.Present
	for _, t := range s.TPM {
		if t.PCRsMatch != nil && !*t.PCRsMatch {
			h.ResealNeeded = true
		}
	}
	return h
}
