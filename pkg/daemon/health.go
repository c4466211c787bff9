package daemon

import (
	"context"
	"sort"

	"github.com/atrest/atrest/internal/health"
)

// checkHealth describes every volume found on a device (as `atrest
// status` does, one batched KMS call) and keeps the result for the
// metrics. It runs with the periodic rewrap check, never per scrape.
func (d *Daemon) checkHealth(ctx context.Context) {
	sts, errs := d.mgr.StatusOf(ctx, nil)
	for _, err := range errs {
		d.log.Debug("health check: device skipped", "error", err)
	}
	var out []health.Volume
	for _, s := range sts {
		if s.UUID == "" { // configured but not found: atrest_volumes{state="missing"} counts it
			continue
		}
		out = append(out, health.Of(s))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	d.mu.Lock()
	d.health = out
	d.mu.Unlock()
}

// healthSnapshot is the last health check's result.
func (d *Daemon) healthSnapshot() []health.Volume {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]health.Volume(nil), d.health...)
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
