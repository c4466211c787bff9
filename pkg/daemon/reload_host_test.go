//go:build !atrest_guest

// Tests that belong to the host tier only: the real-kernel guest has no
// Vault server, and its kernel has a device-mapper. The guest's test
// binaries are built with the atrest_guest tag (integration/vm), which
// leaves this file out.

package daemon

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/dmcrypt"
)

// Reloading (SIGHUP) with Vault as the KMS leaves no connection and no
// goroutine behind: each reload builds a new Vault client and token
// renewal, and the old ones must go with the old configuration. Two
// hundred reloads once left 200 more file descriptors and goroutines.
func TestReloadsLeakNoConnections(t *testing.T) {
	srv := vaulttest.Start(t)
	vn := vaulttest.Provision(t, srv, "reloadnode", nil)
	n := newNode(t, "")
	n.kms = fmt.Sprintf("kms: vault-transit\nvault:\n  address: %s\n  ca_file: %s\n  auth:\n    method: approle\n    role_id: %s\n    secret_id_file: %s\n  transit:\n    key: %s\n",
		srv.Address, srv.CAFile, vn.RoleID, vn.SecretIDFile, vn.Key)
	n.write("  ready_timeout: 1s\n  rescan: 1h\n  require_discovered: false\n")
	d, reload, _ := n.start()
	n.await(30*time.Second, "READY=1")
	// Each new client logs in from its token renewal: wait for that, so
	// that every client has a connection to leak.
	loggedIn := func() {
		for deadline := time.Now().Add(30 * time.Second); d.vault().Stats().Logins == 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the Vault client did not log in within 30s")
			}
		}
	}
	loggedIn()
	sighup := func(times int) {
		for range times {
			reload <- struct{}{}
			n.await(10*time.Second, "RELOADING=1")
			n.await(30*time.Second, "READY=1")
			loggedIn()
		}
	}
	sighup(3)
	fds0, gs0 := openFDs(t), runtime.NumGoroutine()
	const reloads = 40
	sighup(reloads)
	fds, gs := openFDs(t), runtime.NumGoroutine()
	t.Logf("%d reloads: open files %d → %d, goroutines %d → %d", reloads, fds0, fds, gs0, gs)
	// The newest client may still be logging in: a few, not one per reload.
	if fds-fds0 > 5 || gs-gs0 > 5 {
		t.Errorf("after %d reloads: open files %d → %d, goroutines %d → %d; want them bounded", reloads, fds0, fds, gs0, gs)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Without a device-mapper nothing can be opened, however often atrestd
// tries: it says so once, reports ready at once with a degraded status
// naming the cause (no wait for the ready timeout), and schedules no
// retries (a hot loop that re-read every header every few seconds).
func TestNoDeviceMapperIsReportedOnceNotRetried(t *testing.T) {
	if dmcrypt.Available() == nil {
		t.Skip("this kernel has a device-mapper; the test is about one without")
	}
	// Configured and required; volumes other tests on this host make at
	// the same time are found too, and hold nothing back.
	n := newNode(t, "  ready_timeout: 1h\n  retry_min: 10ms\n  retry_max: 20ms\n  rescan: 1h\n  require_discovered: false\n")
	dev := n.format("nodm")
	n.write(fmt.Sprintf("  ready_timeout: 1h\n  retry_min: 10ms\n  retry_max: 20ms\n  rescan: 1h\n  require_discovered: false\nvolumes:\n  - name: nodm\n    device: %s\n", dev.Path))
	d, _, _ := n.start()
	msg := n.await(30*time.Second, "READY=1")
	if !strings.Contains(msg, "STATUS=degraded: no device-mapper in this kernel; ") || !strings.Contains(msg, "not open: nodm (locked, device)") {
		t.Fatalf("READY without a device-mapper: %q", msg)
	}
	// Under the old backoff this would be some fifty attempts.
	time.Sleep(time.Second)
	found := false
	for _, v := range d.Snapshot() {
		if v.Name != "nodm" {
			continue
		}
		found = true
		if v.Attempts != 1 || !strings.Contains(v.Error, "no device-mapper") {
			t.Errorf("a second after READY without a device-mapper: %d attempts, error %q; want 1 naming the device-mapper", v.Attempts, v.Error)
		}
	}
	if !found {
		t.Errorf("volume nodm not tracked: %+v", d.Snapshot())
	}
}
