package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A reload that changes daemon.metrics moves the endpoint: the new socket
// serves, the old one is gone.
func TestReloadMovesMetrics(t *testing.T) {
	n := newNode(t, "  ready_timeout: 1s\n  rescan: 1h\n  require_discovered: false\n")
	_, reload, _ := n.start()
	n.await(30*time.Second, "READY=1")
	old := n.metrics
	n.metrics = filepath.Join(n.dir, "moved", "metrics.sock")
	n.write("  ready_timeout: 1s\n  rescan: 1h\n  require_discovered: false\n")
	reload <- struct{}{}
	n.await(10*time.Second, "RELOADING=1")
	n.await(30*time.Second, "READY=1")
	if m := n.scrape(); m["atrest_ready"] != "1" {
		t.Errorf("metrics on the new address after the reload: %v", m)
	}
	if _, err := os.Lstat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old metrics socket after the move: %v, want it removed", err)
	}
}
