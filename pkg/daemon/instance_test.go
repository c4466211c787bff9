package daemon

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runUntilReady runs a second daemon on n's configuration with its own
// run directory and returns Run's error if it ends before reporting
// READY=1, or nil once it has (it is stopped then).
func (n *node) runUntilReady(runDir string) error {
	n.t.Helper()
	d := New(Options{ConfigPath: n.config, RunDir: runDir, Logger: testLogger(n.t), NoHotplug: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil) }()
	for {
		select {
		case err := <-done:
			return err
		case m := <-n.notify:
			if strings.Contains(m, "READY=1") {
				cancel()
				<-done
				return nil
			}
		case <-time.After(60 * time.Second):
			n.t.Fatal("the daemon neither failed nor became ready within 60s")
		}
	}
}

// daemon.metrics naming a file that is not a socket (here the local
// keystore, one typo away) stops atrestd with a message, and the file is
// left as it was: replacing it would lose every volume the keystore holds.
func TestMetricsPathOnAFileRefusedAndFileKept(t *testing.T) {
	n := newNode(t, "  ready_timeout: 1s\n  rescan: 1h\n")
	n.metrics = filepath.Join(n.dir, "kek")
	n.write("  ready_timeout: 1s\n  rescan: 1h\n")
	want := []byte("the keystore's bytes\n")
	if err := os.WriteFile(n.metrics, want, 0o600); err != nil {
		t.Fatal(err)
	}
	err := n.runUntilReady(filepath.Join(n.dir, "run"))
	if err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("atrestd with daemon.metrics on a regular file: %v, want a refusal naming it", err)
	}
	if got, rerr := os.ReadFile(n.metrics); rerr != nil || !bytes.Equal(got, want) {
		t.Fatalf("the file at the metrics path after atrestd ran: %q, %v; want it untouched", got, rerr)
	}
}

// A second atrestd refuses to start while one runs: with the same run
// directory (the single-instance lock, naming the running pid) and, with
// another one, on the first one's live metrics socket. The first keeps
// serving its metrics.
func TestSecondDaemonRefuses(t *testing.T) {
	n := newNode(t, "  ready_timeout: 1s\n  rescan: 1h\n  require_discovered: false\n")
	n.start()
	n.await(30*time.Second, "READY=1")

	err := n.runUntilReady(filepath.Join(n.dir, "run"))
	if !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("second atrestd on the same run directory: %v, want %v naming pid %d", err, ErrRunning, os.Getpid())
	}
	err = n.runUntilReady(filepath.Join(n.dir, "run2"))
	if !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), n.metrics) {
		t.Errorf("second atrestd on the same metrics socket: %v, want %v naming the socket", err, ErrRunning)
	}
	if m := n.scrape(); m["atrest_ready"] != "1" {
		t.Errorf("the first atrestd's metrics after the second one's attempts: %v", m)
	}
}

// A socket left behind by a killed atrestd (nobody answers on it) is
// replaced.
func TestStaleMetricsSocketReplaced(t *testing.T) {
	n := newNode(t, "  ready_timeout: 1s\n  rescan: 1h\n  require_discovered: false\n")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: n.metrics, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	n.start()
	n.await(30*time.Second, "READY=1")
	if m := n.scrape(); m["atrest_ready"] != "1" {
		t.Errorf("metrics on the replaced socket: %v", m)
	}
}
