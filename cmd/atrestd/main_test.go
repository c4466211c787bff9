package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/memscan"
)

// TestProcessHardening runs the real atrestd and reads its /proc/PID/limits just
// before it exits: the core size limit is 0, soft and hard, so a crash of
// the daemon cannot write its memory (Vault token, TLS keys) to disk. A
// token given in VAULT_TOKEN is gone from its /proc/PID/environ.
func TestProcessHardening(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(t.TempDir(), "atrestd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build atrestd: %v\n%s", err, out)
	}
	var soft, hard string
	var lerr error
	var environ []byte
	cmd := exec.Command(bin, "--version")
	cmd.Env = []string{"VAULT_TOKEN=hvs.atrestd-test-token"}
	status, err := memscan.AtExit(cmd, func(pid int) {
		soft, hard, lerr = memscan.CoreLimit(pid)
		environ, _ = os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	})
	if err != nil || status != 0 || lerr != nil {
		t.Fatalf("atrestd --version: status %d, %v, %v", status, err, lerr)
	}
	if soft != "0" || hard != "0" {
		t.Errorf("atrestd may dump core: RLIMIT_CORE %s/%s, want 0/0", soft, hard)
	}
	if bytes.Contains(environ, []byte("hvs.atrestd-test-token")) {
		t.Error("VAULT_TOKEN is still readable in atrestd's /proc/PID/environ")
	}
}
