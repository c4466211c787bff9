// The unlock attempt: the locked volumes opened in one batch (two when
// some open through a local branch), the outcome recorded per volume.

package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/volume"
)

// locked lists the volumes still to open.
func (d *Daemon) locked() []VolumeState {
	var out []VolumeState
	for _, v := range d.Snapshot() {
		if v.State == StateLocked {
			out = append(out, v)
		}
	}
	return out
}

// attempt opens every locked volume in one batch. On any failure the next
// attempt is scheduled by the backoff; on full success the backoff resets.
func (d *Daemon) attempt(ctx context.Context) {
	todo := d.locked()
	if len(todo) == 0 {
		d.noDM = nil // nothing to map: nothing waits for it
		d.nextTry = time.Time{}
		d.retry.Reset()
		return
	}
	if !d.deviceMapper(todo) {
		return
	}
	var vols []*volume.Volume
	var keys []string
	t0 := time.Now()
	for _, s := range todo {
		// Read the header afresh: a rekey may have changed it.
		v, err := d.mgr.Find(ctx, s.Device)
		if err != nil {
			d.fail(s.Key, err)
			continue
		}
		vols = append(vols, v)
		keys = append(keys, s.Key)
	}
	actx, cancel := d.bounded(ctx, 1)
	defer cancel()
	failed := 0
	if len(vols) > 0 {
		if !d.ready {
			// After READY the status line keeps saying what is wrong.
			d.notify.Status(fmt.Sprintf("unlocking %d volume(s)", len(vols)))
		}
		t1 := time.Now()
		results := d.openBatches(actx, vols)
		var mapMax time.Duration
		for _, r := range results {
			mapMax = max(mapMax, r.Duration)
		}
		d.log.Debug("unlock batch", "volumes", len(vols), "read_headers", t1.Sub(t0).Round(time.Millisecond),
			"open", time.Since(t1).Round(time.Millisecond), "longest_mapping", mapMax.Round(time.Millisecond))
		for i, r := range results {
			d.metrics.unlockAttempts.Inc()
			if r.Err != nil {
				failed++
				d.fail(keys[i], r.Err)
				continue
			}
			d.metrics.countOpen(r)
			if !r.AlreadyOpen {
				d.metrics.unlockSeconds.Observe(r.Duration.Seconds())
				d.log.Info("volume opened", "volume", r.UUID, "name", r.Name, "mapper", r.Mapper, "by", strings.Join(r.By, ","))
				// A TPM keyslot whose PCRs changed is sealed again when a
				// network KMS opened the volume (tpm.reseal); the
				// outcome is logged and audited there. Its own time: the
				// batch may have spent the attempt's.
				rctx, rcancel := d.bounded(ctx, 2)
				_, _ = d.mgr.ResealAfterOpen(rctx, vols[i], r.By)
				rcancel()
			}
			d.set(keys[i], func(s *VolumeState) { s.State, s.Error, s.Reason = StateOpen, "", ""; s.Attempts++ })
		}
	}
	if failed == 0 && len(d.locked()) == 0 {
		d.nextTry = time.Time{}
		d.retry.Reset()
		return
	}
	delay := d.retry.Delay()
	d.nextTry = time.Now().Add(delay)
	d.log.Debug("next unlock attempt", "in", delay.Round(time.Millisecond))
}

// openBatches opens vols in one batch (one KMS round trip per KEK), except
// that the volumes one local branch can open (kms: tpm or local, any:
// [tpm, vault]) go in a second batch beside it. A batch returns when its
// slowest volume is settled: all: [tpm, vault] waits for Vault until the
// KMS deadline when Vault is down, and any: [tpm, vault] must not wait
// with it when the TPM has answered. The TPM KEK is unsealed once for
// both; Vault gets one batch from each when both hold a Vault share.
func (d *Daemon) openBatches(ctx context.Context, vols []*volume.Volume) []volume.OpenResult {
	var quick, rest []int
	for i, v := range vols {
		if v.Platform.LocalBranch() {
			quick = append(quick, i)
		} else {
			rest = append(rest, i)
		}
	}
	if len(quick) == 0 || len(rest) == 0 {
		return d.mgr.Open(ctx, vols, volume.OpenOptions{})
	}
	res := make([]volume.OpenResult, len(vols))
	var wg sync.WaitGroup
	for _, part := range [][]int{quick, rest} {
		wg.Add(1)
		go func(part []int) {
			defer wg.Done()
			sel := make([]*volume.Volume, len(part))
			for j, i := range part {
				sel[j] = vols[i]
			}
			for j, r := range d.mgr.Open(ctx, sel, volume.OpenOptions{}) {
				res[part[j]] = r
			}
		}(part)
	}
	wg.Wait()
	return res
}

// deviceMapper reports whether the kernel can map volumes. Without a
// device-mapper no retry can open anything: the condition is reported
// once (the log, each waiting volume's error, the status line) and the
// backoff stops, no header is read again; the next rescan or hotplug
// event looks again (one open and ioctl), so loading dm-crypt later is
// noticed.
func (d *Daemon) deviceMapper(todo []VolumeState) bool {
	err := dmcrypt.Available()
	if err == nil {
		if d.noDM != nil {
			d.log.Info("device-mapper available now; opening volumes")
			d.noDM = nil
		}
		return true
	}
	if d.noDM == nil {
		d.log.Error("no device-mapper: no volume can be opened until the kernel has one (dm-mod, dm-crypt); not retrying until a rescan finds it", "volumes", len(todo), "error", err)
		for _, s := range todo {
			d.metrics.unlockAttempts.Inc()
			d.metrics.unlockFailures.WithLabelValues(reasonDevice).Inc()
			d.set(s.Key, func(s *VolumeState) { s.Attempts++ })
		}
	}
	d.noDM = err
	for _, s := range todo {
		d.set(s.Key, func(s *VolumeState) { s.Error, s.Reason = err.Error(), reasonDevice })
	}
	d.nextTry = time.Time{}
	return false
}

// fail records err for the volume at key. Errors that retrying may cure
// (the KMS) keep the volume locked; the others mark it failed.
func (d *Daemon) fail(key string, err error) {
	reason := classify(err)
	d.metrics.unlockFailures.WithLabelValues(reason).Inc()
	d.set(key, func(s *VolumeState) {
		s.Attempts++
		if s.Error != err.Error() {
			d.log.Error("volume not opened", "volume", s.UUID, "name", s.Name, "device", s.Device, "reason", reason, "error", err)
		}
		s.Error, s.Reason = err.Error(), reason
		if reason == reasonDevice && errors.Is(err, volume.ErrNotFound) {
			s.State = StateMissing
		}
	})
}

func (d *Daemon) set(key string, f func(*VolumeState)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.vols[key]; s != nil {
		f(s)
	}
}
