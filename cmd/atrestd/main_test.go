package main

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/memscan"
)

// TestNoCoreDump runs the real atrestd and reads its /proc/PID/limits just
// before it exits: the core size limit is 0, soft and hard, so a crash of
// the daemon cannot write its memory (Vault token, TLS keys) to disk.
func TestNoCoreDump(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(t.TempDir(), "atrestd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build atrestd: %v\n%s", err, out)
	}
	var soft, hard string
	var lerr error
	status, err := memscan.AtExit(exec.Command(bin, "--version"), func(pid int) {
		soft, hard, lerr = memscan.CoreLimit(pid)
	})
	if err != nil || status != 0 || lerr != nil {
		t.Fatalf("atrestd --version: status %d, %v, %v", status, err, lerr)
	}
	if soft != "0" || hard != "0" {
		t.Fatalf("atrestd may dump core: RLIMIT_CORE %s/%s, want 0/0", soft, hard)
	}
}
