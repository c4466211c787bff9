package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/internal/testutil/swtpmtest"
)

// tpmNode is a node whose configuration names no kms and whose TPM is sw:
// the embedded default is then the TPM.
func tpmNode(t *testing.T, sw *swtpmtest.TPM) *node {
	n := newNode(t)
	n.setTPM(sw)
	return n
}

func (n *node) setTPM(sw *swtpmtest.TPM) {
	n.t.Helper()
	n.writeTPMConfig("", sw)
}

// writeTPMConfig gives the node a configuration with kms (none when "")
// and the TPM sw.
func (n *node) writeTPMConfig(kms string, sw *swtpmtest.TPM) {
	n.t.Helper()
	doc := fmt.Sprintf("local:\n  keystore: %s/kek\nstate_dir: %s/state\nrecovery:\n  mode: none\ntpm:\n  device: %q\n  pcrs: [7]\n", n.dir, n.dir, sw.Device)
	if kms != "" {
		doc = "kms: " + kms + "\n" + doc
	}
	if err := os.WriteFile(n.config, []byte(doc), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

type volStatus struct {
	Name     string `json:"name"`
	Keyslots []struct {
		ID   int    `json:"id"`
		Role string `json:"role"`
	} `json:"keyslots"`
	KMS struct {
		Backend string `json:"backend"`
		Key     string `json:"key"`
	} `json:"kms"`
}

func (n *node) status(dev string) volStatus {
	n.t.Helper()
	var doc struct{ Volumes []volStatus }
	r := n.run("", "-o", "json", "status", dev)
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Volumes) != 1 {
		n.t.Fatalf("status %s: %v: %s", dev, err, r)
	}
	return doc.Volumes[0]
}

// With a TPM and no kms in the configuration, format seals the platform
// secret's KEK with the TPM, status names the TPM, rekey goes through it,
// and a file-keystore volume moves under it with rewrap --to tpm without
// a keyslot changing.
func TestKMSTPMFormatStatusRekeyRewrapTo(t *testing.T) {
	sw := swtpmtest.Start(t)
	n := newNode(t)
	old := n.volume("old") // kms: local
	if s := n.status(old); s.KMS.Backend != "local" {
		t.Fatalf("a kms: local volume says %q", s.KMS.Backend)
	}
	n.setTPM(sw)
	vol := n.volume("vol")
	s := n.status(vol)
	if s.KMS.Backend != "tpm" {
		t.Fatalf("format with a TPM and no kms configured chose %q, want tpm", s.KMS.Backend)
	}
	if _, err := os.Stat(filepath.Join(n.dir, "state", "tpm-kek.json")); err != nil {
		t.Fatalf("no sealed KEK in the state directory: %v", err)
	}
	n.expect(ExitOK, "rekey", vol)
	if s := n.status(vol); s.KMS.Backend != "tpm" {
		t.Fatalf("after rekey the volume says %q", s.KMS.Backend)
	}

	before := n.status(old)
	r := n.expect(ExitOK, "rewrap", old, "--to", "tpm")
	after := n.status(old)
	if after.KMS.Backend != "tpm" || after.KMS.Key != s.KMS.Key {
		t.Fatalf("rewrap --to tpm left the volume under %+v (%s)", after.KMS, r)
	}
	if fmt.Sprint(before.Keyslots) != fmt.Sprint(after.Keyslots) {
		t.Fatalf("rewrap --to tpm changed the keyslots: %v -> %v", before.Keyslots, after.Keyslots)
	}
	n.expect(ExitOK, "rekey", old) // the moved token unwraps
	n.expect(ExitOK, "rewrap", old, "--to", "tpm")
	n.expect(ExitOK, "kms", "check")
}

// A changed PCR, another TPM and a TPM that is gone each have their own
// exit code, and the volume is left exactly as it was.
func TestKMSTPMRefusalsChangeNothing(t *testing.T) {
	sw := swtpmtest.Start(t)
	n := tpmNode(t, sw)
	vol := n.volume("vol")
	img, err := os.ReadFile(vol)
	if err != nil {
		t.Fatal(err)
	}
	unchanged := func(what string) {
		t.Helper()
		now, err := os.ReadFile(vol)
		if err != nil || !bytes.Equal(now, img) {
			t.Fatalf("%s changed the volume (%v)", what, err)
		}
	}

	other := swtpmtest.Start(t)
	n.setTPM(other)
	n.expect(ExitOtherTPM, "rekey", vol)
	unchanged("rekey on another TPM")
	other.Stop()
	n.expect(ExitNoTPM, "rekey", vol)
	unchanged("rekey without a TPM")

	n.setTPM(sw)
	sw.ExtendPCR7(t)
	r := n.expect(ExitPCRMismatch, "rekey", vol)
	unchanged("rekey after a PCR change")
	if !bytes.Contains([]byte(r.stderr), []byte("PCR")) {
		t.Fatalf("the PCR mismatch does not say so: %s", r)
	}
	var doc struct {
		Volumes []struct {
			ExitCode int `json:"exit_code"`
		} `json:"volumes"`
	}
	r = n.run("", "-o", "json", "rekey", vol)
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Volumes) != 1 || doc.Volumes[0].ExitCode != ExitPCRMismatch {
		t.Fatalf("JSON exit_code, want %d: %v: %s", ExitPCRMismatch, err, r)
	}
	unchanged("rekey -o json after a PCR change")
}
