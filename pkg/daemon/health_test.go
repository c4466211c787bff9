package daemon

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A volume whose header backup is gone shows state "missing" in a scrape
// (what the alert AtrestHeaderBackupMissingOrStale watches); after
// `atrest header backup` the next check shows it current.
func TestHeaderBackupStateInMetrics(t *testing.T) {
	n := newNode(t, "  ready_timeout: 1s\n  rescan: 1h\n  rewrap: 1s\n  require_discovered: false\n")
	dev := n.format("dhb")
	ctx := context.Background()
	v, err := n.manager().Find(ctx, dev.Path)
	if err != nil {
		t.Fatal(err)
	}
	backups, _ := filepath.Glob(filepath.Join(n.dir, "state", "backups", "*"))
	if len(backups) == 0 {
		t.Fatal("format left no header backup in the state directory")
	}
	for _, b := range backups {
		if err := os.Remove(b); err != nil {
			t.Fatal(err)
		}
	}
	series := func(state string) string {
		return `atrest_volume_header_backup{name="dhb",state="` + state + `",volume="` + v.UUID() + `"}`
	}
	_, _, stop := n.start()
	n.await(10*time.Second, "READY=1")
	n.waitScrape(series("missing"))
	if m := n.scrape(); m[`atrest_volume_recovery_missing{name="dhb",volume="`+v.UUID()+`"}`] != "0" ||
		m[`atrest_volume_tpm_reseal_needed{name="dhb",volume="`+v.UUID()+`"}`] != "0" {
		t.Errorf("recovery/reseal gauges of a healthy volume: %v", m)
	}
	if _, err := n.manager().HeaderBackup(ctx, v, ""); err != nil {
		t.Fatal(err)
	}
	m := n.waitScrape(series("current"))
	if _, ok := m[series("missing")]; ok {
		t.Error("after header backup the scrape still shows the backup missing")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// waitScrape scrapes until series is 1, for at most 30 s.
func (n *node) waitScrape(series string) map[string]string {
	n.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := n.scrape()
		if m[series] == "1" {
			return m
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("no %s = 1 within 30s; last scrape: %v", series, m)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
