package daemon

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/volume"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are atrestd's Prometheus series. Counters and histograms are
// updated as work happens; the per-volume gauges are read from the
// daemon's state at scrape time (stateCollector).
type metrics struct {
	reg            *prometheus.Registry
	unlockAttempts prometheus.Counter
	unlockFailures *prometheus.CounterVec
	unlockSeconds  prometheus.Histogram
	opens          *prometheus.CounterVec
	kmsSeconds     *prometheus.HistogramVec
	stale          prometheus.Gauge
	ready          prometheus.Gauge
}

func newMetrics(d *Daemon) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		unlockAttempts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "atrest_unlock_attempts_total",
			Help: "Unlock attempts, one per volume per try.",
		}),
		unlockFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atrest_unlock_failures_total",
			Help: "Failed unlock attempts by reason: kms_unavailable, kms_auth, kms_config, kms_key, keyslot, device, not_managed, tpm, reencrypting, other.",
		}, []string{"reason"}),
		unlockSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "atrest_unlock_duration_seconds",
			Help:    "Time to open one volume's keyslot and map it, once its platform secret is known.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		opens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atrest_volume_opens_total",
			Help: "Volumes atrestd opened, by the factor whose secret or share opened each (an all or threshold branch counts the open once for each of its factors; a volume without a policy under its backend).",
		}, []string{"factor"}),
		kmsSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "atrest_kms_request_duration_seconds",
			Help:    "Duration of batched KMS calls by operation (unwrap, rewrap) and result (ok, error).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"op", "result"}),
		stale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "atrest_stale_key_versions",
			Help: "Volumes whose token is wrapped under an older KEK version than the KMS's newest, at the last check.",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "atrest_ready",
			Help: "1 once atrestd reported readiness to systemd.",
		}),
	}
	m.reg.MustRegister(m.unlockAttempts, m.unlockFailures, m.unlockSeconds, m.opens, m.kmsSeconds, m.stale, m.ready,
		stateCollector{d}, vaultCollector{d}, collectors.NewGoCollector())
	for _, r := range reasons {
		m.unlockFailures.WithLabelValues(r)
	}
	return m
}

// knowFactors starts the opens counter of every factor the configuration
// can open a volume through (the kms: backend and every factor its
// policies name) at zero, so that its series exist before the first open.
func (m *metrics) knowFactors(backend string, cfg *config.Config) {
	for _, f := range append([]string{backend}, cfg.PolicyFactors()...) {
		m.opens.WithLabelValues(f)
	}
}

// countOpen counts an open by the factors that gave its secret (a volume
// found open already was not opened by atrestd).
func (m *metrics) countOpen(r volume.OpenResult) {
	if r.Err != nil || r.AlreadyOpen {
		return
	}
	for _, f := range r.By {
		m.opens.WithLabelValues(f).Inc()
	}
}

// observeKMS is the volume.Manager's KMS observer.
func (m *metrics) observeKMS(op string, took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.kmsSeconds.WithLabelValues(op, result).Observe(took.Seconds())
}

var (
	volumesDesc = prometheus.NewDesc("atrest_volumes", "Volumes atrestd tracks, by state (open, locked, missing, failed).", []string{"state"}, nil)
	rekeyDesc   = prometheus.NewDesc("atrest_last_rekey_age_seconds", "Time since the volume's platform keyslot was made or last rekeyed.", []string{"volume", "name"}, nil)
	// The health gauges come from the volumes' Status (the one `atrest
	// status` shows) at the last health check, not from the scrape.
	backupDesc = prometheus.NewDesc("atrest_volume_header_backup",
		"1 for the volume's header backup state at the last health check: missing, stale (older than the header) or current.", []string{"volume", "name", "state"}, nil)
	recoveryDesc = prometheus.NewDesc("atrest_volume_recovery_missing",
		"1 when the volume's token records a recovery key but no keyslot holds one, at the last health check.", []string{"volume", "name"}, nil)
	resealDesc = prometheus.NewDesc("atrest_volume_tpm_reseal_needed",
		"1 when a TPM keyslot of the volume is sealed to PCR values that changed (atrest tpm reseal), at the last health check.", []string{"volume", "name"}, nil)
)

// stateCollector reports the tracked volumes at scrape time.
type stateCollector struct{ d *Daemon }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	describe(ch, volumesDesc, rekeyDesc, backupDesc, recoveryDesc, resealDesc)
}

func describe(ch chan<- *prometheus.Desc, descs ...*prometheus.Desc) {
	for _, d := range descs {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{StateOpen: 0, StateLocked: 0, StateMissing: 0, StateFailed: 0}
	now := time.Now()
	for _, v := range c.d.Snapshot() {
		counts[v.State]++
		if !v.Rekeyed.IsZero() {
			ch <- prometheus.MustNewConstMetric(rekeyDesc, prometheus.GaugeValue, now.Sub(v.Rekeyed).Seconds(), v.UUID, v.Name)
		}
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(volumesDesc, prometheus.GaugeValue, float64(n), state)
	}
	for _, h := range c.d.healthSnapshot() {
		ch <- prometheus.MustNewConstMetric(backupDesc, prometheus.GaugeValue, 1, h.UUID, h.Name, h.Backup)
		ch <- prometheus.MustNewConstMetric(recoveryDesc, prometheus.GaugeValue, b2f(h.RecoveryMissing), h.UUID, h.Name)
		ch <- prometheus.MustNewConstMetric(resealDesc, prometheus.GaugeValue, b2f(h.ResealNeeded), h.UUID, h.Name)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var (
	vaultRequestsDesc    = prometheus.NewDesc("atrest_kms_vault_requests_total", "HTTP requests sent to Vault, logins included.", nil, nil)
	vaultRetriesDesc     = prometheus.NewDesc("atrest_kms_vault_retries_total", "Vault requests sent again after a backoff wait.", nil, nil)
	vaultFailoversDesc   = prometheus.NewDesc("atrest_kms_vault_failovers_total", "Vault requests sent to another address after one failed (a dead or sealed node, an election).", nil, nil)
	vaultRateLimitedDesc = prometheus.NewDesc("atrest_kms_vault_rate_limited_total", "HTTP 429 answers from Vault (a rate-limit quota).", nil, nil)
	vaultBackoffDesc     = prometheus.NewDesc("atrest_kms_vault_backoff_seconds_total", "Time waited before Vault retries.", nil, nil)
	vaultElectionsDesc   = prometheus.NewDesc("atrest_kms_vault_election_waits_total", "Vault operations that found the cluster electing an active node and waited for it.", nil, nil)
	vaultProbesDesc      = prometheus.NewDesc("atrest_kms_vault_election_probes_total", "Unauthenticated sys/health questions asked while waiting for an election (not requests).", nil, nil)
	vaultRedirectsDesc   = prometheus.NewDesc("atrest_kms_vault_redirects_total", "Vault requests sent again to the node a standby's 307 named (a standby not yet forwarding after an election).", nil, nil)
	vaultHandshakesDesc  = prometheus.NewDesc("atrest_kms_vault_handshake_failures_total", "Connections to Vault whose TLS handshake did not complete (cut or timed out by an overloaded node): no request sent.", nil, nil)
)

// vaultCollector reports the running Vault client's counters at scrape
// time; nothing without Vault. A SIGHUP that replaces the client starts
// them from zero, which Prometheus's rate() treats as a counter reset.
type vaultCollector struct{ d *Daemon }

func (c vaultCollector) Describe(ch chan<- *prometheus.Desc) {
	describe(ch, vaultRequestsDesc, vaultRetriesDesc, vaultFailoversDesc, vaultRateLimitedDesc, vaultBackoffDesc, vaultElectionsDesc, vaultProbesDesc, vaultRedirectsDesc, vaultHandshakesDesc)
}

func (c vaultCollector) Collect(ch chan<- prometheus.Metric) {
	vc := c.d.vault()
	if vc == nil {
		return
	}
	st := vc.Stats()
	ch <- prometheus.MustNewConstMetric(vaultRequestsDesc, prometheus.CounterValue, float64(st.Requests))
	ch <- prometheus.MustNewConstMetric(vaultRetriesDesc, prometheus.CounterValue, float64(st.Retries))
	ch <- prometheus.MustNewConstMetric(vaultFailoversDesc, prometheus.CounterValue, float64(st.Failovers))
	ch <- prometheus.MustNewConstMetric(vaultRateLimitedDesc, prometheus.CounterValue, float64(st.RateLimited))
	ch <- prometheus.MustNewConstMetric(vaultBackoffDesc, prometheus.CounterValue, st.Backoff.Seconds())
	ch <- prometheus.MustNewConstMetric(vaultElectionsDesc, prometheus.CounterValue, float64(st.ElectionWaits))
	ch <- prometheus.MustNewConstMetric(vaultProbesDesc, prometheus.CounterValue, float64(st.Probes))
	ch <- prometheus.MustNewConstMetric(vaultRedirectsDesc, prometheus.CounterValue, float64(st.Redirects))
	ch <- prometheus.MustNewConstMetric(vaultHandshakesDesc, prometheus.CounterValue, float64(st.HandshakeFailures))
}

// metricsServer is the /metrics endpoint on one address.
type metricsServer struct {
	addr string // as configured: unix:/PATH or HOST:PORT
	ln   net.Listener
	srv  *http.Server
}

// serveMetrics serves /metrics on addr (unix:/PATH or HOST:PORT) until
// Close. On a unix path only a stale socket is replaced (listenUnix).
func serveMetrics(addr string, reg *prometheus.Registry) (*metricsServer, error) {
	var ln net.Listener
	var err error
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		ln, err = listenUnix(path)
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	m := &metricsServer{addr: addr, ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() { _ = m.srv.Serve(ln) }()
	return m, nil
}

// addrOrOff is the address served, "off" for none.
func (m *metricsServer) addrOrOff() string {
	if m == nil {
		return "off"
	}
	return m.addr
}

// Close stops serving and removes the socket file it made.
func (m *metricsServer) Close() error {
	if m == nil {
		return nil
	}
	return m.srv.Close()
}

// applyMetrics serves the metrics where the configuration says, moving
// them when daemon.metrics changed (SIGHUP). The new address is bound
// before the old one is let go; if it cannot be, the old one stays.
func (d *Daemon) applyMetrics() error {
	addr := d.cfg.Daemon.Metrics
	if d.msrv == nil && addr == "off" || d.msrv != nil && d.msrv.addr == addr {
		return nil
	}
	var srv *metricsServer
	if addr != "off" {
		var err error
		if srv, err = serveMetrics(addr, d.metrics.reg); err != nil {
			return fmt.Errorf("metrics on %s: %w", addr, err)
		}
		d.log.Info("metrics listening", "address", srv.ln.Addr().String())
	}
	if d.msrv != nil {
		_ = d.msrv.Close()
		d.log.Info("metrics no longer served", "address", d.msrv.addr)
	}
	d.msrv = srv
	return nil
}
