package daemon

import (
	"errors"
	"testing"

	"github.com/atrest/atrest/pkg/config"

	"github.com/atrest/atrest/pkg/volume"
)

// atrest_volume_opens_total counts each open once for every factor that
// gave a share of it, not a volume found open already or a failed open,
// and has a zero series for every factor the configuration can open
// through before anything opened.
func TestOpensCountedByFactor(t *testing.T) {
	m := newMetrics(New(Options{}))
	cfg, err := config.Parse([]byte("kms: local\nlocal:\n  keystore: /k\nvault:\n  address: https://v:8200\n  transit:\n    key: k\npolicy:\n  any: [{all: [tpm, vault]}, local]\n"), "/etc/atrest/atrest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m.knowFactors("local", cfg)
	if got := opens(t, m); len(got) != 3 || got["local"] != 0 || got["tpm"] != 0 || got["vault"] != 0 {
		t.Fatalf("opens series before any open: %v, want local, tpm and vault at 0", got)
	}
	for _, r := range []volume.OpenResult{
		{By: []string{"tpm", "vault"}},
		{By: []string{"local"}},
		{By: []string{"tpm", "vault"}},
		{By: []string{"local"}, AlreadyOpen: true},
		{By: []string{"vault"}, Err: errors.New("keyslot did not open")},
	} {
		m.countOpen(r)
	}
	got := opens(t, m)
	for f, want := range map[string]float64{"tpm": 2, "vault": 2, "local": 1} {
		if got[f] != want {
			t.Errorf("opens by %s: %v, want %v", f, got[f], want)
		}
	}
}

// opens is atrest_volume_opens_total by factor, as a scrape reads it.
func opens(t *testing.T, m *metrics) map[string]float64 {
	t.Helper()
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "atrest_volume_opens_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "factor" {
					out[l.GetValue()] = s.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}
