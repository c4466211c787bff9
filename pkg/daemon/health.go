package daemon

import (
	"context"
	"sort"

	"github.com/atrest/atrest/pkg/volume"
)

// Header backup states, the state label of atrest_volume_header_backup.
const (
	backupMissing = "missing"
	backupStale   = "stale"
	backupCurrent = "current"
)

// volumeHealth is what the health gauges say of one volume, taken from
// the Status `atrest status` shows.
type volumeHealth struct {
	uuid, name      string
	backup          string
	recoveryMissing bool
	resealNeeded    bool
}

// healthOf reads the gauges' values from s. Recovery is missing where
// Status itself reports the token's recovery key without a keyslot.
func healthOf(s volume.Status) volumeHealth {
	h := volumeHealth{uuid: s.UUID, name: s.Name, backup: backupCurrent}
	switch {
	case !s.Backup.Present:
		h.backup = backupMissing
	case !s.Backup.Current:
		h.backup = backupStale
	}
	h.recoveryMissing = s.KMS != nil && s.Recovery.Escrow != "" && !s.Recovery.Present
	for _, t := range s.TPM {
		if t.PCRsMatch != nil && !*t.PCRsMatch {
			h.resealNeeded = true
		}
	}
	return h
}

// checkHealth describes every volume found on a device (as `atrest
// status` does, one batched KMS call) and keeps the result for the
// metrics. It runs with the periodic rewrap check, never per scrape.
func (d *Daemon) checkHealth(ctx context.Context) {
	sts, errs := d.mgr.StatusOf(ctx, nil)
	for _, err := range errs {
		d.log.Debug("health check: device skipped", "error", err)
	}
	var out []volumeHealth
	for _, s := range sts {
		if s.UUID == "" { // configured but not found: atrest_volumes{state="missing"} counts it
			continue
		}
		out = append(out, healthOf(s))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	d.mu.Lock()
	d.health = out
	d.mu.Unlock()
}

// healthSnapshot is the last health check's result.
func (d *Daemon) healthSnapshot() []volumeHealth {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]volumeHealth(nil), d.health...)
}

// logFailovers logs, at info level, the Vault failovers since the last
// call: the client counts them but has no hook to report each one.
func (d *Daemon) logFailovers() {
	vc := d.vault()
	if vc == nil {
		return
	}
	st := vc.Stats()
	d.mu.Lock()
	prev := d.failovers
	if st.Failovers < prev { // a new client after SIGHUP
		prev = 0
	}
	d.failovers = st.Failovers
	d.mu.Unlock()
	if st.Failovers > prev {
		d.log.Info("vault failovers: requests went to another Vault address after one failed", "failovers", st.Failovers-prev, "total", st.Failovers, "addresses", vc.Addresses())
	}
}
