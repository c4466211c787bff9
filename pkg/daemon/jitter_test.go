package daemon

import (
	"strings"
	"testing"
	"time"
)

// With daemon.start_jitter, atrestd says in its status that it waits
// before the first unlock, does not unlock a volume during the wait, and
// still stops at once on SIGTERM.
func TestStartJitterDelaysTheFirstUnlock(t *testing.T) {
	n := newNode(t, "  start_jitter: 1h\n")
	n.format("data1")
	_, _, stop := n.start()
	m := n.await(30*time.Second, "before the first unlock (daemon.start_jitter 1h0m0s)")
	if strings.Contains(m, "READY=1") {
		t.Errorf("ready during the start jitter: %q", m)
	}
	quiet := time.After(2 * time.Second)
	for waiting := true; waiting; {
		select {
		case m := <-n.notify:
			if m != "WATCHDOG=1" {
				t.Errorf("during the start jitter atrestd said %q", m)
			}
		case <-quiet:
			waiting = false
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("stop during the start jitter: %v", err)
	}
}
