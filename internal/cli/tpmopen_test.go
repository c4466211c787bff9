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
	n.writeTPMConfig("local", sw)
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
		By             []string `json:"by"`
		Resealed       []any    `json:"resealed"`
		ResealedPolicy []int    `json:"resealed_policy_keyslots"`
		Error          string   `json:"error"`
		Code           int      `json:"exit_code"`
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
// their TPM keyslots and says so (text, JSON; --test leaves no note); a PIN keyslot
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
	// --test changes nothing, as cryptsetup's --test-passphrase: not
	// even the note status reads of what opened the volume last.
	if r := n.run("", "-o", "json", "status", n.vol); json.Unmarshal([]byte(r.stdout), &st) != nil || len(st.Volumes) != 1 || len(st.Volumes[0].LastUnlock.By) != 0 {
		t.Fatalf("open --test left a note of what opened the volume: %s", r)
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
	sw := swtpmtest.Start(t)
	n := vaultTPMNode(t, s, sw, "")
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

// vaultTPMNode is a kms: vault-transit node on s (its Vault timeouts
// short, its CA file its own: a stopped server takes its own) with the
// TPM sw, PCR 7 measured; extra is appended to the configuration.
func vaultTPMNode(t *testing.T, s *vaulttest.Server, sw *swtpmtest.TPM, extra string) *node {
	t.Helper()
	vn := vaulttest.Provision(t, s, "cliopen", nil)
	sw.ExtendPCR7(t)
	n := newNode(t)
	ca := filepath.Join(n.dir, "ca.pem")
	if b, err := os.ReadFile(s.CAFile); err != nil || os.WriteFile(ca, b, 0o600) != nil {
		t.Fatal(err)
	}
	doc := fmt.Sprintf("kms: vault-transit\nstate_dir: %s/state\nrecovery:\n  mode: none\nvault:\n  address: %s\n  ca_file: %s\n  timeout: 2s\n  deadline: 2s\n  auth:\n    method: approle\n    role_id: %s\n    secret_id_file: %s\n  transit:\n    key: %s\ntpm:\n  device: %q\n%s",
		n.dir, s.Address, ca, vn.RoleID, vn.SecretIDFile, vn.Key, sw.Device, extra)
	if err := os.WriteFile(n.config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return n
}

// Volumes under any: [tpm, vault]: after a PCR change atrest open --test
// opens each through Vault and re-seals its tpm factor, and says so in
// JSON and text: the first open seals the TPM KEK anew, the second finds
// it in place and only makes its policy keyslots again; a third open has
// nothing to do, and with Vault gone they open through the TPM.
func TestOpenResealsPolicyTPMFactor(t *testing.T) {
	s := vaulttest.Start(t)
	sw := swtpmtest.Start(t)
	n := vaultTPMNode(t, s, sw, "policy:\n  any: [tpm, vault]\n")
	tn := &tpmKeyslotNode{node: n}
	a, b := n.volume("pvola"), n.volume("pvolb")
	sw.ExtendPCR7(t)
	if d, r := tn.openJSON(a); r.code != ExitOK || !slices.Equal(d.Volumes[0].By, []string{"vault"}) || len(d.Volumes[0].ResealedPolicy) != 2 {
		t.Fatalf("open --test -o json after the PCR change: %s", r)
	}
	r := n.expect(ExitOK, "open", "--test", b)
	if !strings.Contains(r.stdout, "pvolb: unlocks (by vault)") || !strings.Contains(r.stdout, "pvolb: policy factor tpm re-sealed to today's PCRs") ||
		strings.Contains(r.stdout, "KEK no longer unsealed") {
		t.Fatalf("open --test of the second volume: %s", r)
	}
	if d, r := tn.openJSON(a); r.code != ExitOK || len(d.Volumes[0].ResealedPolicy) != 0 {
		t.Fatalf("a third open --test re-sealed again: %s", r)
	}
	s.Stop(t)
	for _, vol := range []string{a, b} {
		if d, r := tn.openJSON(vol); r.code != ExitOK || !slices.Equal(d.Volumes[0].By, []string{"tpm"}) {
			t.Fatalf("with Vault gone: %s", r)
		}
	}
}

// A volume under all: [tpm, vault] after a PCR change does not open
// (the TPM was needed) and open --test re-seals nothing; atrest tpm
// reseal --recovery, with its recovery key, re-seals its tpm factor and
// says so, and it opens through tpm and vault again.
func TestTPMResealPolicyAllWithRecoveryKey(t *testing.T) {
	s := vaulttest.Shared(t)
	sw := swtpmtest.Start(t)
	n := vaultTPMNode(t, s, sw, "policy:\n  all: [tpm, vault]\n")
	vol, key := n.formatWithKey("allvol")
	sw.ExtendPCR7(t)
	kek := filepath.Join(n.dir, "state", "tpm-kek.json")
	img, kekBefore := sum(t, vol), sum(t, kek)
	n.expect(ExitPCRMismatch, "open", "--test", vol)
	if sum(t, vol) != img || sum(t, kek) != kekBefore {
		t.Fatal("the refused open changed the volume or the KEK file")
	}
	r := n.expect(ExitOK, "tpm", "reseal", vol, "--recovery", "--key-file", key)
	if !strings.Contains(r.stdout, "allvol: the TPM-sealed KEK no longer unsealed") || !strings.Contains(r.stdout, "allvol: policy factor tpm re-sealed to today's PCRs: new policy keyslots") {
		t.Fatalf("tpm reseal --recovery: %s", r)
	}
	if d, r := (&tpmKeyslotNode{node: n}).openJSON(vol); r.code != ExitOK || !slices.Equal(d.Volumes[0].By, []string{"tpm", "vault"}) {
		t.Fatalf("after the re-seal: %s", r)
	}
}
