package daemon

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/atrest/atrest/pkg/volume"
)

// Failure reasons, the label of atrest_unlock_failures_total.
const (
	reasonKMSUnavailable = "kms_unavailable"
	reasonKMSAuth        = "kms_auth"
	reasonKMSConfig      = "kms_config"
	reasonKMSKey         = "kms_key"
	reasonKeyslot        = "keyslot"
	reasonDevice         = "device"
	reasonNotManaged     = "not_managed"
	reasonTPM            = "tpm"
	reasonReencrypting   = "reencrypting"
	reasonOther          = "other"
)

var reasons = []string{reasonKMSUnavailable, reasonKMSAuth, reasonKMSConfig, reasonKMSKey, reasonKeyslot, reasonDevice, reasonNotManaged, reasonTPM, reasonReencrypting, reasonOther}

// reasonOf maps pkg/volume's classification (the one the CLI's exit codes
// come from) to the failure reasons of metrics and the status line.
var reasonOf = map[volume.Kind]string{
	volume.KindKMSUnavailable:    reasonKMSUnavailable,
	volume.KindKMSAuth:           reasonKMSAuth,
	volume.KindKMSDenied:         reasonKMSAuth,
	volume.KindKMSConfig:         reasonKMSConfig,
	volume.KindKMSKeyNotFound:    reasonKMSKey,
	volume.KindKMSUnknownBackend: reasonKMSKey,
	volume.KindKMSRejected:       reasonKMSKey,
	volume.KindKMSSecretNotFound: reasonKMSKey,
	volume.KindKeyRejected:       reasonKeyslot,
	volume.KindMalformedRecovery: reasonKeyslot,
	volume.KindNotFound:          reasonDevice,
	volume.KindNotADevice:        reasonDevice,
	volume.KindNoDeviceMapper:    reasonDevice,
	volume.KindAmbiguous:         reasonDevice,
	volume.KindDeviceChanged:     reasonDevice,
	volume.KindHeaderDamaged:     reasonDevice,
	volume.KindHeldExclusively:   reasonDevice,
	volume.KindNoMapperNode:      reasonDevice,
	volume.KindNotManaged:        reasonNotManaged,
	volume.KindBadToken:          reasonNotManaged,
	volume.KindNoTPM:             reasonTPM,
	volume.KindTPMGone:           reasonTPM,
	volume.KindPCRMismatch:       reasonTPM,
	volume.KindTPMLockout:        reasonTPM,
	volume.KindOtherTPM:          reasonTPM,
	volume.KindWrongPIN:          reasonTPM,
	volume.KindTPMBadToken:       reasonTPM,
	volume.KindTPMUnsupported:    reasonTPM,
	volume.KindReencrypting:      reasonReencrypting,
}

// classify names the part that failed, for metrics and the status line.
func classify(err error) string {
	if r, ok := reasonOf[volume.Classify(err).Kind]; ok {
		return r
	}
	return reasonOther
}

type summary struct {
	line            string
	requiredWaiting int
}

// statusListed is how many volumes that are not open the status line
// names; the rest are counted ("and 163 more"): systemctl status shows
// one line, and a machine can carry hundreds of volumes.
const statusListed = 5

// summarize makes the one-line status: how many volumes are open and,
// for the first few others (required ones first), what they wait for.
func summarize(vols []VolumeState, nextTry time.Time) summary {
	var s summary
	open := 0
	var required, others []string
	for _, v := range vols {
		if v.State == StateOpen {
			open++
			continue
		}
		what := v.State
		if v.Reason != "" {
			what += ", " + strings.ReplaceAll(v.Reason, "_", " ")
		}
		line := fmt.Sprintf("%s (%s)", v.Name, what)
		if v.Required {
			s.requiredWaiting++
			required = append(required, line)
		} else {
			others = append(others, line)
		}
	}
	waiting := append(required, others...)
	shown := waiting
	if len(waiting) > statusListed {
		shown = append(waiting[:statusListed:statusListed], fmt.Sprintf("and %d more", len(waiting)-statusListed))
	}
	switch {
	case len(vols) == 0:
		s.line = "no atrest volumes found"
	case len(waiting) == 0:
		s.line = fmt.Sprintf("%d/%d volumes open", open, len(vols))
	default:
		s.line = fmt.Sprintf("%d/%d volumes open; not open: %s", open, len(vols), strings.Join(shown, ", "))
		if wait := time.Until(nextTry); !nextTry.IsZero() && wait >= time.Second {
			s.line += fmt.Sprintf("; next try in %s", wait.Round(time.Second))
		}
	}
	return s
}

// rewrapStale moves tokens wrapped under an older KEK version to the
// newest one (pkg/volume's Rewrap: no keyslot or data change), counts
// the volumes still stale for the metric, then takes the volumes' health
// for the gauges (checkHealth).
func (d *Daemon) rewrapStale(ctx context.Context) {
	ctx, cancel := d.bounded(ctx, 3) // describe the KEKs, rewrap, describe them for the health check
	defer cancel()
	defer d.logFailovers()
	defer d.checkHealth(ctx)
	vols, errs := d.mgr.Managed(ctx)
	for _, err := range errs {
		d.log.Warn("device skipped", "error", err)
	}
	if len(vols) == 0 {
		d.stale = 0
		return
	}
	stale := 0
	for _, r := range d.mgr.Rewrap(ctx, vols, false) {
		switch {
		case r.Err != nil:
			stale++
			d.log.Error("rewrap failed; will retry", "volume", r.UUID, "name", r.Name, "error", r.Err)
		case !r.Skipped:
			d.log.Info("token rewrapped to the KEK's newest version", "volume", r.UUID, "name", r.Name, "from", r.From, "to", r.To)
		}
		for _, w := range r.Warnings {
			d.log.Warn("after rewrap", "volume", r.UUID, "name", r.Name, "warning", w)
		}
	}
	d.stale = stale
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
