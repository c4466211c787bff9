package cli

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// An interrupted rekey met with the KMS down: the next rekey can check
// neither keyslot, changes nothing, and exits 9 (the KMS is what to fix),
// not 1: the error keeps the KMS's sentinel through every layer.
func TestInterruptedRekeyWithKMSDown(t *testing.T) {
	srv := vaulttest.Start(t)
	n, _ := vaultNode(t, srv, "cutdown")
	dev := disk(t, 64)
	n.ok("format", dev, "--name", "cutdown1")
	n.env = []string{"ATREST_FAILPOINT=rekey-after-add"}
	if r := n.run(nil, "rekey", "cutdown1"); r.code != 137 {
		t.Fatalf("the failpoint did not end the rekey: %s", r)
	}
	n.env = nil
	srv.Stop(t)
	before := testutil.SHA256(t, dev)
	n.expect(9, []string{"neither opens through the KMS", "kms unavailable", "hint: check the network and the KMS"}, "rekey", "cutdown1")
	if testutil.SHA256(t, dev) != before {
		t.Fatal("a rekey that could check neither keyslot changed the device")
	}
}

// Too small a locked-memory limit (and no CAP_IPC_LOCK, which root
// otherwise has) is named as such: exit 1 with the hint to raise the
// limit, not the kms section's hint, and the device is untouched.
func TestMemoryLockLimit(t *testing.T) {
	testutil.RequireCommand(t, "prlimit", "util-linux")
	testutil.RequireCommand(t, "setpriv", "util-linux")
	n := localNode(t, "none")
	dev := disk(t, 64)
	before := testutil.SHA256(t, dev)
	cmd := exec.Command("prlimit", "--memlock=0:0", "setpriv", "--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock",
		atrestBinary(t), "-c", n.config, "format", dev, "--name", "memlock1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %v:\n%s", err, out)
	}
	if !strings.Contains(string(out), "hint: atrest keeps keys in locked memory") || strings.Contains(string(out), "kms section") {
		t.Fatalf("the hint does not name the locked-memory limit:\n%s", out)
	}
	if testutil.SHA256(t, dev) != before {
		t.Fatal("a format that could not lock key memory changed the device")
	}
}
