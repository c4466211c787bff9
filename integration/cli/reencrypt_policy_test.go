package cli

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// policyVaultNode is a node under all: [vault, local] (real Vault Transit, the
// local keystore) whose recovery keys are printed.
func policyVaultNode(t *testing.T, srv *vaulttest.Server, name string) *node {
	t.Helper()
	n, _ := vaultNode(t, srv, name)
	doc, err := os.ReadFile(n.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(doc), "kms: vault-transit\n", fmt.Sprintf("kms: local\nlocal:\n  keystore: %s/kek\npolicy:\n  all: [vault, local]\n", n.dir), 1)
	cfg = strings.Replace(cfg, "mode: escrow", "mode: print", 1)
	n.writeConfig(cfg)
	return n
}

// atrest reencrypt of a volume under all: [vault, local] on a loop device,
// killed (exit 137) right after it put the volume into re-encryption with
// the policy made again: status names the re-encryption and the command
// (exit 3) and not an unfinished rekey, open refuses it (exit 21), the
// recovery key the killed run printed opens both keys (cryptsetup dumps
// it), reencrypt --resume finishes it; then status is healthy under the
// same policy, the new recovery key dumps a new volume key under which
// the data reads as before, and the old recovery key no longer opens.
func TestReencryptPolicyVolumeKilledResumes(t *testing.T) {
	n := policyVaultNode(t, vaulttest.Shared(t), "polre")
	dev := disk(t, 48)
	k := killedAfterStart(t, n, dev, "polre1")
	st := n.run(nil, "status", "polre1")
	if st.code != 3 || !strings.Contains(st.stdout+st.stderr, "re-encryption is under way or was interrupted") || !strings.Contains(st.stdout+st.stderr, "atrest reencrypt polre1") || strings.Contains(st.stdout+st.stderr, "extra platform") {
		t.Fatalf("status of a policy volume in re-encryption: %s", st)
	}
	if r := n.run(nil, "open", "polre1"); r.code != 21 {
		t.Fatalf("open of a volume in re-encryption: %s", r)
	}
	if dump := sh(t, "cryptsetup", "luksDump", dev); !strings.Contains(dump, "online-reencrypt-v2") {
		t.Fatalf("not in re-encryption:\n%s", dump)
	}
	if out := n.ok("reencrypt", "polre1", "--resume").stdout; !strings.Contains(out, "polre1: resumed a re-encryption") || !strings.Contains(out, "policy all(vault,local)") {
		t.Fatalf("the resume: %s", out)
	}
	s := jsonOf[statusJSON](t, n.ok("-o", "json", "status", "polre1"))
	if !s.Healthy {
		t.Fatalf("status after the resume: %+v", s)
	}
	if !cryptsetupAccepts(t, dev, k.newRec) || cryptsetupAccepts(t, dev, k.oldRec) {
		t.Fatal("want the new recovery key to open the volume, the old not")
	}
	newVK := volumeKeyOf(t, dev, k.newRec)
	if bytes.Equal(newVK, k.oldVK) || !bytes.Equal(dataXTS(t, dev, newVK, nil), k.plain) {
		t.Fatal("want a new volume key and the same plaintext")
	}
}
