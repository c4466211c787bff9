package daemon

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// startJitter waits a random time in [0, daemon.start_jitter) before the
// first unlock, so that a datacenter powering on spreads its nodes'
// Vault logins and decrypts over that window instead of one second
// (docs/fleet.md). It pings the watchdog while it waits; it returns
// false when ctx ended during the wait (SIGTERM).
func (d *Daemon) startJitter(ctx context.Context) bool {
	max := d.cfg.Daemon.StartJitter
	if max <= 0 {
		return true
	}
	wait := rand.N(max)
	d.notify.Status(fmt.Sprintf("waiting %s before the first unlock (daemon.start_jitter %s)", wait.Round(time.Millisecond), max))
	d.log.Info("start jitter", "wait", wait.String(), "start_jitter", max.String())
	end := time.NewTimer(wait)
	defer end.Stop()
	ping := time.NewTicker(time.Second)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-end.C:
			return true
		case <-ping.C:
			d.notify.Watchdog()
		}
	}
}
