package daemon

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/volume"
)

// rescan brings the tracked volumes up to date with the devices present:
// every configured volume (missing until its device appears) and every
// device whose LUKS2 header carries an atrest token. Configured blank
// devices with format: true are provisioned first. At start, volumes found
// by their token are required when daemon.require_discovered says so;
// volumes that appear later never hold readiness (it was given already).
func (d *Daemon) rescan(ctx context.Context, atStart bool) {
	if !d.early {
		d.provision(ctx)
	}
	found, errs := d.mgr.Scan(ctx)
	for _, err := range errs {
		d.log.Warn("device skipped", "error", err)
	}
	tab := readCrypttab(d.crypttabPath())
	d.mu.Lock()
	defer d.mu.Unlock()
	present := map[string]bool{}
	for _, v := range found {
		if !v.Managed() && v.Config == nil {
			continue // a LUKS2 volume of someone else's
		}
		if tab.names(v.UUID(), v.Device) {
			if !d.crypttabbed[v.UUID()] {
				d.crypttabbed[v.UUID()] = true
				d.log.Info("volume left to systemd-cryptsetup: /etc/crypttab names it", "volume", v.UUID(), "name", v.Name, "device", v.Device)
			}
			continue
		}
		present[v.UUID()] = true
		s := d.vols[v.UUID()]
		if s == nil {
			s = &VolumeState{Key: v.UUID(), UUID: v.UUID(), State: StateLocked}
			d.vols[s.Key] = s
			// A configured volume tracked as missing has turned up.
			if v.Config != nil {
				delete(d.vols, "name:"+v.Config.Name)
			}
			switch {
			case v.Config != nil:
				s.Required, s.Configured = v.Config.IsRequired(), true
			case atStart:
				s.Required = d.cfg.Daemon.RequiresDiscovered()
			}
			d.log.Info("volume found", "volume", s.UUID, "name", v.Name, "device", v.Device, "required", s.Required)
		}
		s.Name, s.Device, s.Local = v.Name, v.Device, v.Platform.Local()
		if v.Platform != nil {
			s.Rekeyed = v.Platform.Created
			if v.Platform.Rotated.After(s.Rekeyed) {
				s.Rekeyed = v.Platform.Rotated
			}
		}
		switch {
		case !v.Managed():
			s.State, s.Reason = StateFailed, reasonNotManaged
			s.Error = v.Device + ": " + volume.ErrNotManaged.Error() + "; take it over with: atrest adopt " + v.Device + " --name " + v.Name
		case s.State == StateMissing || s.State == StateFailed:
			s.State = StateLocked
		}
	}
	// Volumes whose device went away: a configured one is missing; one
	// that was only found by its token is forgotten (a disk unplugged).
	for k, s := range d.vols {
		if s.UUID == "" || present[s.UUID] || s.State == StateOpen || strings.HasPrefix(k, "name:") {
			continue
		}
		if s.Configured {
			s.State, s.Reason = StateMissing, ""
		} else {
			d.log.Info("volume gone", "volume", s.UUID, "name", s.Name, "device", s.Device)
			delete(d.vols, k)
		}
	}
	// Configured volumes not found yet.
	for _, c := range d.cfg.Volumes {
		tracked := false
		for _, s := range d.vols {
			if s.Name == c.Name && s.UUID != "" {
				tracked = true
			}
		}
		if tracked {
			continue
		}
		s := d.vols["name:"+c.Name]
		if s == nil {
			s = &VolumeState{Key: "name:" + c.Name, Name: c.Name, Device: c.Device, UUID: c.UUID, Required: c.IsRequired()}
			d.vols[s.Key] = s
		}
		s.State, s.Reason, s.Error = StateMissing, "", "configured volume not found on any device"
		if c.Device != "" && exists(c.Device) {
			// Present, but no LUKS2 header: not formatted, or provisioning
			// refused it.
			s.State, s.Reason = StateFailed, reasonDevice
			s.Error = c.Device + " holds no LUKS2 volume"
			if why := d.refused[c.Device]; why != "" {
				s.Error += "; not formatted: " + why
			}
		}
	}
}

// crypttabPath is the crypttab whose volumes atrestd leaves alone.
func (d *Daemon) crypttabPath() string {
	if d.opts.Crypttab != "" {
		return d.opts.Crypttab
	}
	return crypttabPath
}

// provision formats configured devices marked format: true that are
// present and blank. Format's preflight refuses any device that carries a
// signature or is in use, so a disk with data is never touched; each
// device is tried once per start (a refusal is logged, not repeated).
// A recovery key cannot be shown to anyone here: with recovery.mode
// escrow it is escrowed, otherwise the volume gets none and the log says
// how to add one.
func (d *Daemon) provision(ctx context.Context) {
	for _, c := range d.cfg.Volumes {
		if !c.Format || c.Device == "" || d.formatted[c.Device] {
			continue
		}
		if _, err := d.mgr.Find(ctx, c.Device); err == nil {
			d.formatted[c.Device] = true // already LUKS2
			continue
		} else if errors.Is(err, volume.ErrNotFound) && !exists(c.Device) {
			continue // not plugged in yet
		}
		d.formatted[c.Device] = true
		mode := "none"
		if d.cfg.Recovery.Mode == config.RecoveryEscrow {
			mode = "escrow"
		}
		fctx, cancel := d.bounded(ctx, 2) // wrap, and escrow the recovery key
		res, err := d.mgr.Format(fctx, volume.FormatOptions{Device: c.Device, Name: c.Name, Recovery: mode, Discard: c.Discard})
		cancel()
		if err != nil {
			d.refused[c.Device] = err.Error()
			d.log.Error("provisioning refused", "name", c.Name, "device", c.Device, "error", err)
			continue
		}
		if res.Recovery != nil {
			res.Recovery.Wipe()
		}
		d.log.Info("provisioned a blank device", "volume", res.UUID, "name", c.Name, "device", c.Device, "recovery", mode)
		if mode == "none" {
			d.log.Warn("volume has no recovery key; add one with: atrest recovery rotate "+c.Name, "volume", res.UUID)
		}
	}
}

// report sends systemd the status line and, once every required volume is
// open or the ready timeout has passed, READY=1.
func (d *Daemon) report(readyBy time.Time) {
	st := summarize(d.Snapshot(), d.nextTry)
	d.metrics.stale.Set(float64(d.stale))
	if d.noDM != nil {
		st.line = "no device-mapper in this kernel; " + st.line
	}
	if !d.ready {
		switch {
		case st.requiredWaiting == 0:
			d.ready = true
			d.metrics.ready.Set(1)
			d.notify.Ready(st.line)
			d.log.Info("ready", "status", st.line)
			return
		case d.noDM != nil:
			// Waiting for the ready timeout cannot open anything.
			d.ready = true
			d.metrics.ready.Set(1)
			d.notify.Ready("degraded: " + st.line)
			return
		case !time.Now().Before(readyBy):
			d.ready = true
			d.metrics.ready.Set(1)
			line := "degraded: " + st.line
			d.notify.Ready(line)
			d.log.Error("ready timeout passed with required volumes locked; boot goes on, retrying in the background", "status", st.line, "timeout", d.cfg.Daemon.ReadyTimeout)
			return
		}
	}
	if d.ready && st.requiredWaiting > 0 {
		st.line = "degraded: " + st.line
	}
	d.notify.Status(st.line)
}
