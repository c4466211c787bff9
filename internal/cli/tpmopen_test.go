package cli

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil/swtpmtest"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// tpmKeyslotNode is a kms: local node with the TPM sw for TPM keyslots,
// PCR 7 measured; vol has a TPM keyslot without a PIN, pvol one with the
// PIN in pinFile.
type tpmKeyslotNode struct {
	*node
	vol, pvol, pinFile string
}

func newTPMKeyslotNode(t *testing.T, sw *swtpmtest.TPM) *tpmKeyslotNode {
	n := &tpmKeyslotNode{node: newNode(t)}
	sw.ExtendPCR7(t)
	n.useTPM(sw)
	n.vol, n.pvol = n.volume("vol"), n.volume("pvol")
	n.pinFile = n.file("pin", "1357\n")
	n.expect(ExitOK, "tpm", "enroll", n.vol, "--pcrs", "7")
	n.expect(ExitOK, "tpm", "enroll", n.pvol, "--pcrs", "7", "--pin-file", n.pinFile)
	return n
}

// useTPM points the node's kms: local configuration at sw.
func (n *tpmKeyslotNode) useTPM(sw *swtpmtest.TPM) {
	n.t.Helper()
	doc := fmt.Sprintf("kms: local\nlocal:\n  keystore: %s/kek\nstate_dir: %s/state\nrecovery:\n  mode: none\ntpm:\n  device: %q\n", n.dir, n.dir, sw.Device)
	if err := os.WriteFile(n.config, []byte(doc), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

func (n *tpmKeyslotNode) file(name, content string) string {
	n.t.Helper()
	p := filepath.Join(n.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		n.t.Fatal(err)
	}
	return p
}

// breakKMS takes the local keystore away: the platform keyslots no
// longer open.
func (n *tpmKeyslotNode) breakKMS() {
	n.t.Helper()
	if err := os.Rename(filepath.Join(n.dir, "kek"), filepath.Join(n.dir, "kek.away")); err != nil {
		n.t.Fatal(err)
	}
}

type openDoc struct {
	Volumes []struct {
		By       []string `json:"by"`
		Resealed []any    `json:"resealed"`
		Error    string   `json:"error"`
		Code     int      `json:"exit_code"`
	} `json:"volumes"`
}

func (n *tpmKeyslotNode) openJSON(args ...string) (openDoc, run) {
	n.t.Helper()
	var doc openDoc
	r := n.run("", append([]string{"-o", "json", "open", "--test"}, args...)...)
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Volumes) != 1 {
		n.t.Fatalf("open --test %v: %v: %s", args, err, r)
	}
	return doc, r
}

func sum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// With the KMS unable to open them, atrest open opens volumes through
// their TPM keyslots and says so (text, JSON, status); a PIN keyslot
// opens with --pin-file and without it the error names the PIN. The local
// keystore does not vouch for the node: a PCR change is not re-sealed
// when it opened the volume.
func TestOpenThroughTPMKeyslot(t *testing.T) {
	sw := swtpmtest.Start(t)
	n := newTPMKeyslotNode(t, sw)
	if r := n.expect(ExitOK, "open", "--test", n.vol); !strings.Contains(r.stdout, "vol: unlocks (by local); not mapped (--test)") {
		t.Fatalf("open --test with the keystore there: %s", r)
	}
	n.breakKMS()
	doc, r := n.openJSON(n.vol)
	if r.code != ExitOK || !slices.Equal(doc.Volumes[0].By, []string{"tpm-keyslot"}) {
		t.Fatalf("open --test without the keystore: %s", r)
	}
	var st struct {
		Volumes []struct {
			LastUnlock struct {
				By []string `json:"by"`
			} `json:"last_unlock"`
		} `json:"volumes"`
	}
	if r := n.run("", "-o", "json", "status", n.vol); json.Unmarshal([]byte(r.stdout), &st) != nil || len(st.Volumes) != 1 || !slices.Equal(st.Volumes[0].LastUnlock.By, []string{"tpm-keyslot"}) {
		t.Fatalf("status does not say the TPM keyslot opened the volume: %s", r)
	}
	if r := n.expect(ExitKMSKey, "open", "--test", n.pvol); !strings.Contains(r.stderr, "needs a PIN") {
		t.Fatalf("a PIN keyslot without a PIN: %s", r)
	}
	if r := n.expect(ExitOK, "open", "--test", n.pvol, "--pin-file", n.pinFile); !strings.Contains(r.stdout, "pvol: unlocks (by tpm-keyslot)") {
		t.Fatalf("a PIN keyslot with its PIN: %s", r)
	}

	if err := os.Rename(filepath.Join(n.dir, "kek.away"), filepath.Join(n.dir, "kek")); err != nil {
		t.Fatal(err)
	}
	sw.ExtendPCR7(t)
	before := sum(t, n.vol)
	if doc, r := n.openJSON(n.vol); r.code != ExitOK || !slices.Equal(doc.Volumes[0].By, []string{"local"}) || len(doc.Volumes[0].Resealed) != 0 {
		t.Fatalf("open by the local keystore after a PCR change: %s", r)
	}
	if sum(t, n.vol) != before {
		t.Fatal("the local keystore's open re-sealed the TPM keyslot")
	}
}

// With a real Vault as the KMS, atrest open after a PCR change re-seals
// the TPM keyslot (Vault vouched for the node) and says so in text and
// JSON; status then finds nothing stale, and with Vault gone the volume
// opens through the re-sealed keyslot.
func TestOpenResealsThroughVault(t *testing.T) {
	s := vaulttest.Start(t)
	vn := vaulttest.Provision(t, s, "cliopen", nil)
	sw := swtpmtest.Start(t)
	sw.ExtendPCR7(t)
	n := newNode(t)
	ca := filepath.Join(n.dir, "ca.pem") // a stopped server takes its own
	if b, err := os.ReadFile(s.CAFile); err != nil || os.WriteFile(ca, b, 0o600) != nil {
		t.Fatal(err)
	}
	doc := fmt.Sprintf("kms: vault-transit\nstate_dir: %s/state\nrecovery:\n  mode: none\nvault:\n  address: %s\n  ca_file: %s\n  timeout: 2s\n  deadline: 2s\n  auth:\n    method: approle\n    role_id: %s\n    secret_id_file: %s\n  transit:\n    key: %s\ntpm:\n  device: %q\n",
		n.dir, s.Address, ca, vn.RoleID, vn.SecretIDFile, vn.Key, sw.Device)
	if err := os.WriteFile(n.config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	vol := n.volume("vvol")
	n.expect(ExitOK, "tpm", "enroll", vol, "--pcrs", "7")
	sw.ExtendPCR7(t)
	if _, code := n.tpmStatus(vol); code != ExitAttention {
		t.Fatalf("status after the PCR change: exit %d, want %d", code, ExitAttention)
	}
	r := n.expect(ExitOK, "open", "--test", vol)
	if !strings.Contains(r.stdout, "vvol: unlocks (by vault-transit)") || !strings.Contains(r.stdout, "sealed again to today's sha256 PCRs 7") {
		t.Fatalf("open --test after the PCR change: %s", r)
	}
	doc2, code := n.tpmStatus(vol)
	if code != ExitOK || len(doc2.Volumes[0].TPM) != 1 || !*doc2.Volumes[0].TPM[0].PCRsMatch {
		t.Fatalf("status after the re-seal: exit %d %+v", code, doc2)
	}
	s.Stop(t)
	if d, r := (&tpmKeyslotNode{node: n}).openJSON(vol); r.code != ExitOK || !slices.Equal(d.Volumes[0].By, []string{"tpm-keyslot"}) {
		t.Fatalf("with Vault gone: %s", r)
	}
}
