// Package daemon is atrestd: the service that opens atrest volumes at boot
// without a person, and looks after them while the machine runs.
//
// At start it takes the single-instance lock (a second atrestd refuses to
// run), loads the configuration, formats configured blank devices that
// ask for it (discover.go), finds its volumes (the configured ones
// and every block device whose LUKS2 header carries an atrest token) and
// opens them all through the volume use cases: one batched KMS call per
// KEK, keyslots opened in parallel. Required volumes hold READY=1 back; an
// unreachable KMS is retried with jittered exponential backoff, and when
// the configured ready timeout passes atrestd reports ready anyway with a
// degraded status, so boot is never held forever, and keeps retrying.
// While it runs it picks up devices that appear (kernel uevents, plus a
// periodic rescan), reloads its configuration on SIGHUP, rewraps tokens
// whose KEK has a newer version, keeps its Vault token renewed, pings
// systemd's watchdog and serves Prometheus metrics. SIGTERM ends it
// without closing any volume: mounted file systems must not lose their
// devices because the service stopped.
//
// Every format, open and rewrap it runs is audited by pkg/volume into the
// journal, never with key material.
package daemon

import (
	"context"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/atrest/atrest/internal/health"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms/backends"
	"github.com/atrest/atrest/pkg/kms/vault"
	"github.com/atrest/atrest/pkg/volume"
)

// Volume states as atrestd reports them.
const (
	StateOpen    = "open"    // mapped
	StateLocked  = "locked"  // present, not open yet; being retried
	StateMissing = "missing" // configured, no device found yet
	StateFailed  = "failed"  // present but cannot be opened by retrying (not an atrest volume, bad header)
)

// Options configure a Daemon.
type Options struct {
	// ConfigPath is the configuration file (config.DefaultPath if empty).
	ConfigPath string
	// Logger receives progress and, through pkg/volume, the audit trail.
	Logger *slog.Logger
	// Getenv supplies VAULT_* overrides (os.Getenv if nil).
	Getenv func(string) string
	// RunDir moves the volume locks and atrestd's single-instance lock
	// (atrestd.pid) from /run/atrest (tests).
	RunDir string
	// NoHotplug turns off the kernel uevent listener (the periodic rescan
	// remains).
	NoHotplug bool
	// Crypttab moves /etc/crypttab, whose volumes are left to
	// systemd-cryptsetup (tests).
	Crypttab string
}

// VolumeState is one tracked volume, as Snapshot reports it.
type VolumeState struct {
	// Key identifies the volume: its UUID, or "name:NAME" for a configured
	// volume not found yet.
	Key, UUID, Name, Device string
	State                   string
	// Required volumes hold readiness back.
	Required bool
	// Configured volumes have an entry in the configuration.
	Configured bool
	// Error is the last failure ("" when none).
	Error string
	// Reason classifies Error for metrics.
	Reason string
	// Attempts counts unlock attempts.
	Attempts int
	// Rekeyed is when the platform keyslot was made or last rekeyed.
	Rekeyed time.Time
	// Local volumes open without a network: every secret is under the
	// TPM or the local keystore (atrestd --early opens them).
	Local bool
}

// Daemon is one atrestd run.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	notify  *notifier
	metrics *metrics

	cfg *config.Config
	kms *backends.Set
	mgr *volume.Manager

	mu    sync.Mutex
	vols  map[string]*VolumeState
	ready bool

	retry     *backoff
	nextTry   time.Time
	formatted map[string]bool   // provisioning done or refused, by device
	refused   map[string]string // why provisioning refused a device
	stale     int               // volumes still stale after the last rewrap check
	health    []health.Volume   // the health gauges at the last check (checkHealth)
	failovers int64             // the Vault client's failovers logged so far

	stopRenewal func()          // ends the running Vault token renewal and waits for it
	msrv        *metricsServer  // nil with daemon.metrics: off
	noDM        error           // why the kernel cannot map volumes, while it cannot
	early       bool            // RunEarly: local volumes only, no provisioning
	crypttabbed map[string]bool // volumes left to systemd-cryptsetup, logged once
}

// New prepares a Daemon; Run starts it.
func New(opts Options) *Daemon {
	if opts.ConfigPath == "" {
		opts.ConfigPath = config.DefaultPath
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{opts: opts, log: opts.Logger, vols: map[string]*VolumeState{}, formatted: map[string]bool{}, refused: map[string]string{}, crypttabbed: map[string]bool{}}
	d.notify = &notifier{log: d.log}
	d.metrics = newMetrics(d)
	return d
}

// runDir is where the volume locks and the single-instance lock live.
func (d *Daemon) runDir() string {
	if d.opts.RunDir != "" {
		return d.opts.RunDir
	}
	return "/run/atrest"
}

// load reads the configuration and builds the backends and the Manager.
func (d *Daemon) load() error {
	cfg, err := config.Load(d.opts.ConfigPath)
	if err != nil {
		return err
	}
	set, err := backends.Open(cfg, d.opts.Getenv)
	if err != nil {
		return err
	}
	mopts := []volume.Option{volume.WithLogger(d.log), volume.WithKMSObserver(d.metrics.observeKMS)}
	if d.opts.RunDir != "" {
		mopts = append(mopts, volume.WithRunDir(d.opts.RunDir))
	}
	d.use(cfg, set, volume.New(cfg, set, mopts...), newBackoff(cfg.Daemon.RetryMin, cfg.Daemon.RetryMax))
	d.metrics.knowFactors(set.Backend(), cfg)
	return nil
}

// use makes cfg and its backends the running configuration. The backends
// are swapped under mu: the metrics (and tests) read them from other
// goroutines.
func (d *Daemon) use(cfg *config.Config, set *backends.Set, mgr *volume.Manager, retry *backoff) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cfg, d.kms, d.mgr, d.retry = cfg, set, mgr, retry
}

// vault is the running configuration's Vault client (nil without Vault).
func (d *Daemon) vault() *vault.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.kms == nil {
		return nil
	}
	return d.kms.Vault()
}

// Snapshot returns the tracked volumes, sorted by name.
func (d *Daemon) Snapshot() []VolumeState {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]VolumeState, 0, len(d.vols))
	for _, v := range d.vols {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Run is atrestd's life: it returns nil when ctx ends (SIGTERM), leaving
// every volume open, or an error if it cannot start (a bad
// configuration). reload delivers SIGHUP.
func (d *Daemon) Run(ctx context.Context, reload <-chan struct{}) error {
	d.notify.Status("starting")
	lock, err := lockInstance(d.runDir())
	if err != nil {
		d.notify.Status("cannot start: " + err.Error())
		return err
	}
	defer lock.Close()
	if err := d.load(); err != nil {
		d.notify.Status("cannot start: " + err.Error())
		return err
	}
	d.log.Info("atrestd starting", "config", d.opts.ConfigPath, "kms", d.cfg.KMS)
	if err := d.applyMetrics(); err != nil {
		d.notify.Status("cannot start: " + err.Error())
		return err
	}
	defer func() { _ = d.msrv.Close() }()
	var hotplug <-chan struct{}
	if !d.opts.NoHotplug {
		hctx, stopHotplug := context.WithCancel(ctx)
		ch, done, err := blockEvents(hctx)
		if err != nil {
			stopHotplug()
			d.log.Warn("no hotplug events; relying on the periodic rescan", "error", err)
		} else {
			defer func() { stopHotplug(); <-done }()
		}
		hotplug = ch
	}
	d.startKeepAlive(ctx)
	defer d.stopKeepAlive()

	if !d.startJitter(ctx) {
		d.stopKeepAlive()
		d.notify.Stopping()
		return nil
	}
	readyBy := time.Now().Add(d.cfg.Daemon.ReadyTimeout)
	d.rescan(ctx, true)
	d.attempt(ctx)

	var watchdog <-chan time.Time
	if iv, err := sd.SdWatchdogEnabled(false); err == nil && iv > 0 {
		t := time.NewTicker(iv / 2)
		defer t.Stop()
		watchdog = t.C
	}
	rescan := time.NewTicker(d.cfg.Daemon.Rescan)
	defer rescan.Stop()
	rewrap := time.NewTicker(d.cfg.Daemon.Rewrap)
	defer rewrap.Stop()
	// A first rewrap check soon after start, once boot is over.
	firstRewrap := time.After(min(time.Minute, d.cfg.Daemon.Rewrap))

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	// A plug is a burst of events: the rescan waits for it to settle,
	// on a timer of its own so that SIGTERM and the watchdog are served
	// meanwhile.
	var settle <-chan time.Time
	for {
		d.report(readyBy)
		wake := d.nextTry
		if !d.ready && (wake.IsZero() || readyBy.Before(wake)) {
			wake = readyBy
		}
		timer.Stop()
		if !wake.IsZero() {
			timer.Reset(time.Until(wake))
		}
		select {
		case <-ctx.Done():
			d.stopKeepAlive()
			d.notify.Stopping()
			d.log.Info("atrestd stopping; volumes stay open")
			return nil
		case <-reload:
			d.reload(ctx)
			rescan.Reset(d.cfg.Daemon.Rescan)
			rewrap.Reset(d.cfg.Daemon.Rewrap)
		case <-hotplug:
			if settle == nil {
				settle = time.After(200 * time.Millisecond)
			}
		case <-settle:
			settle = nil
			d.rescan(ctx, false)
			d.attempt(ctx)
		case <-rescan.C:
			d.rescan(ctx, false)
			d.attempt(ctx)
		case <-timer.C:
			if !d.nextTry.IsZero() && !time.Now().Before(d.nextTry) {
				d.attempt(ctx)
			}
		case <-watchdog:
			d.notify.Watchdog()
		case <-firstRewrap:
			d.rewrapStale(ctx)
		case <-rewrap.C:
			d.rewrapStale(ctx)
		}
	}
}

// bounded bounds KMS work done from the main loop to n KMS call timeouts
// (at least 5 s each): retries are the loop's business, and a loop stuck
// in a hung KMS call would miss the watchdog.
func (d *Daemon) bounded(ctx context.Context, n int) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, time.Duration(n)*max(d.cfg.Vault.Timeout, 5*time.Second))
}

// startKeepAlive renews the current backends' Vault token in the
// background, when Vault is used, until stopKeepAlive.
func (d *Daemon) startKeepAlive(ctx context.Context) {
	vc := d.vault()
	if vc == nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := vc.KeepAlive(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("vault token renewal stopped", "error", err)
		}
	}()
	d.stopRenewal = func() { cancel(); <-done }
}

// stopKeepAlive ends the token renewal and waits until it has returned,
// so that its client can be closed under it.
func (d *Daemon) stopKeepAlive() {
	if d.stopRenewal != nil {
		d.stopRenewal()
		d.stopRenewal = nil
	}
}

// reload rereads the configuration (SIGHUP). A bad file is reported and
// the running configuration kept.
func (d *Daemon) reload(ctx context.Context) {
	d.notify.Reloading()
	defer d.notify.Reloaded()
	cfg, set, mgr, retry := d.cfg, d.kms, d.mgr, d.retry
	if err := d.load(); err != nil {
		d.use(cfg, set, mgr, retry)
		d.log.Error("reload failed; keeping the running configuration", "error", err)
		return
	}
	// The old token renewal goes before the backends it uses.
	d.stopKeepAlive()
	_ = set.Close()
	d.startKeepAlive(ctx)
	d.log.Info("configuration reloaded", "config", d.opts.ConfigPath)
	if err := d.applyMetrics(); err != nil {
		d.log.Error("metrics address not changed; still serving on the old one", "old", d.msrv.addrOrOff(), "error", err)
	}
	d.mu.Lock()
	for k, v := range d.vols {
		if v.State == StateMissing {
			delete(d.vols, k) // configured names may have changed
		}
	}
	d.mu.Unlock()
	d.nextTry = time.Time{}
	d.rescan(ctx, false)
	d.attempt(ctx)
}
