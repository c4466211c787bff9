package vaulttest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The server must not outlive the test that started it, and must leave no
// files behind: tests run it hundreds of times a day.
func TestServerStopsAndCleansUp(t *testing.T) {
	s, err := start(Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(filepath.Dir(s.CAFile))
	if _, err := os.Stat(s.CAFile); err != nil {
		t.Fatalf("CA file %s: %v", s.CAFile, err)
	}
	h, err := s.Client(t).Sys().Health()
	if err != nil || h.Sealed || !h.Initialized {
		t.Fatalf("fresh server health: %+v, %v", h, err)
	}
	s.Seal(t)
	s.Unseal(t)
	if _, err := s.Client(t).Logical().Write("secret/data/probe", map[string]any{"data": map[string]any{"k": "v"}}); err != nil {
		t.Errorf("KV v2 at secret/ after unseal: %v", err)
	}
	s.stop() // closes its standard input, as a dying test process would
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		t.Fatal("server still running 20s after its input closed")
	}
	if err := syscall.Kill(s.PID, 0); err == nil {
		t.Errorf("process %d still exists", s.PID)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("server directory %s left behind: %v", dir, err)
	}
}
