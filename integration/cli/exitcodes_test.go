package cli

import (
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
