package cli

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/swtpmtest"
)

type tpmStatusDoc struct {
	Volumes []struct {
		Keyslots []struct {
			ID   int    `json:"id"`
			Role string `json:"role"`
		} `json:"keyslots"`
		TPM []struct {
			Keyslot   int    `json:"keyslot"`
			PCRs      []int  `json:"pcrs"`
			Bank      string `json:"bank"`
			PIN       bool   `json:"pin"`
			PCRsMatch *bool  `json:"pcrs_match"`
		} `json:"tpm_keyslots"`
		Problems []string `json:"problems"`
	} `json:"volumes"`
}

func (n *node) tpmStatus(dev string) (tpmStatusDoc, int) {
	n.t.Helper()
	var doc tpmStatusDoc
	r := n.run("", "-o", "json", "status", dev)
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Volumes) != 1 {
		n.t.Fatalf("status: %v: %s", err, r)
	}
	return doc, r.code
}

func oracle(t *testing.T, name, pkg string, args ...string) string {
	t.Helper()
	bin := testutil.RequireCommand(t, name, pkg)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// atrest tpm enroll writes a keyslot and token that systemd's own tools
// read as theirs; status shows the binding and whether today's PCRs still
// satisfy it; after a PCR change tpm reseal seals again; tpm remove takes
// the keyslots and tokens away.
func TestTPMEnrollStatusResealRemove(t *testing.T) {
	sw := swtpmtest.Start(t)
	sw.ExtendPCR7(t) // a measured PCR 7, so the policy binds to something
	n := tpmNode(t, sw)
	vol := n.volume("vol")

	n.expect(ExitOK, "tpm", "enroll", vol, "--pcrs", "7")
	pinFile := filepath.Join(n.dir, "pin")
	if err := os.WriteFile(pinFile, []byte("2468\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.expect(ExitOK, "tpm", "enroll", vol, "--pcrs", "7", "--pin", "--pin-file", pinFile)

	dump := oracle(t, "cryptsetup", "cryptsetup-bin", "luksDump", vol)
	for _, want := range []string{"systemd-tpm2", "tpm2-hash-pcrs:   7", "tpm2-pcr-bank:    sha256", "tpm2-pin:         false", "tpm2-pin:         true"} {
		if !strings.Contains(dump, want) {
			t.Errorf("cryptsetup luksDump (systemd's token plugin) does not show %q:\n%s", want, dump)
		}
	}
	list := oracle(t, "systemd-cryptenroll", "systemd", vol)
	if got := len(regexp.MustCompile(`(?m)^\s*\d+\s+tpm2\s*$`).FindAllString(list, -1)); got != 2 {
		t.Errorf("systemd-cryptenroll lists %d tpm2 keyslots, want 2:\n%s", got, list)
	}

	doc, _ := n.tpmStatus(vol)
	v := doc.Volumes[0]
	if len(v.TPM) != 2 {
		t.Fatalf("status shows %d TPM keyslots, want 2: %+v", len(v.TPM), v)
	}
	for i, k := range v.TPM {
		if k.Bank != "sha256" || len(k.PCRs) != 1 || k.PCRs[0] != 7 || k.PIN != (i == 1) || k.PCRsMatch == nil || !*k.PCRsMatch {
			t.Errorf("TPM keyslot %d in status: %+v", i, k)
		}
	}
	roles := 0
	for _, ks := range v.Keyslots {
		if ks.Role == "tpm" {
			roles++
		}
	}
	if roles != 2 {
		t.Errorf("%d keyslots with role tpm, want 2: %+v", roles, v.Keyslots)
	}

	if r := n.run("", "status", vol, "--long"); !strings.Contains(r.stdout, "sha256 PCRs 7, PIN, today's PCRs match") {
		t.Errorf("status --long does not describe the TPM keyslot with a PIN: %s", r)
	}

	// A firmware update changes PCR 7: status says so, reseal mends it.
	// (The platform KEK is sealed to PCR 7 too, so move it to the file
	// keystore first: reseal needs the platform keyslot.)
	n.expect(ExitOK, "rewrap", vol, "--to", "local")
	sw.ExtendPCR7(t)
	doc, code := n.tpmStatus(vol)
	if code != ExitAttention || len(doc.Volumes[0].TPM) != 2 || *doc.Volumes[0].TPM[0].PCRsMatch || !strings.Contains(strings.Join(doc.Volumes[0].Problems, "\n"), "atrest tpm reseal") {
		t.Fatalf("status after PCR 7 changed: exit %d %+v", code, doc)
	}
	img, err := os.ReadFile(vol)
	if err != nil {
		t.Fatal(err)
	}
	n.expect(ExitUsage, "tpm", "reseal", vol) // the PIN keyslot needs its PIN
	if now, _ := os.ReadFile(vol); string(now) != string(img) {
		t.Fatal("a reseal refused for want of a PIN changed the volume")
	}
	n.expect(ExitOK, "tpm", "reseal", vol, "--pin", "--pin-file", pinFile)
	doc, _ = n.tpmStatus(vol)
	if len(doc.Volumes[0].TPM) != 2 {
		t.Fatalf("after reseal: %+v", doc)
	}
	for _, k := range doc.Volumes[0].TPM {
		if k.PCRsMatch == nil || !*k.PCRsMatch {
			t.Errorf("after reseal a TPM keyslot still does not match: %+v", k)
		}
	}
	if s := strings.Join(doc.Volumes[0].Problems, "\n"); strings.Contains(s, "TPM") {
		t.Errorf("problems after reseal: %s", s)
	}

	n.expect(ExitOK, "tpm", "remove", vol)
	doc, _ = n.tpmStatus(vol)
	if len(doc.Volumes[0].TPM) != 0 {
		t.Fatalf("after remove: %+v", doc.Volumes[0].TPM)
	}
	if dump := oracle(t, "cryptsetup", "cryptsetup-bin", "luksDump", vol); strings.Contains(dump, "systemd-tpm2") {
		t.Fatalf("a systemd-tpm2 token is left:\n%s", dump)
	}
	n.expect(ExitNotFound, "tpm", "remove", vol)
	n.expect(ExitOK, "rewrap", vol, "--force") // the platform keyslot still opens
}

// A keyslot systemd-cryptenroll enrolled on an atrest volume is a TPM
// keyslot to atrest: status shows its binding and whether today's PCRs
// satisfy it, and tpm remove takes it away.
func TestSystemdEnrolledKeyslotInStatusAndRemove(t *testing.T) {
	sw := swtpmtest.Start(t)
	sw.ExtendPCR7(t)
	n := newNode(t)
	doc := "kms: local\nlocal:\n  keystore: " + n.dir + "/kek\nstate_dir: " + n.dir + "/state\nrecovery:\n  mode: print\ntpm:\n  device: \"" + sw.Device + "\"\n"
	if err := os.WriteFile(n.config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	img := n.image("vol.img", 20)
	var f struct {
		Recovery struct {
			Key string `json:"key"`
		} `json:"recovery"`
	}
	r := n.expect(ExitOK, "-o", "json", "format", img, "--name", "vol")
	if err := json.Unmarshal([]byte(r.stdout), &f); err != nil || f.Recovery.Key == "" {
		t.Fatalf("no recovery key in format's output: %v: %s", err, r)
	}
	kf := filepath.Join(n.dir, "recovery.key")
	if err := os.WriteFile(kf, []byte(f.Recovery.Key), 0o600); err != nil {
		t.Fatal(err)
	}
	oracle(t, "systemd-cryptenroll", "systemd", "--unlock-key-file="+kf, "--tpm2-device="+sw.Device, "--tpm2-pcrs=7", img)

	d, _ := n.tpmStatus(img)
	if len(d.Volumes[0].TPM) != 1 || d.Volumes[0].TPM[0].PCRsMatch == nil || !*d.Volumes[0].TPM[0].PCRsMatch || d.Volumes[0].TPM[0].Bank != "sha256" {
		t.Fatalf("status of systemd's TPM keyslot: %+v", d.Volumes[0].TPM)
	}
	sw.ExtendPCR7(t)
	if d, code := n.tpmStatus(img); code != ExitAttention || *d.Volumes[0].TPM[0].PCRsMatch {
		t.Fatalf("status after PCR 7 changed: exit %d %+v", code, d.Volumes[0].TPM)
	}
	n.expect(ExitOK, "tpm", "remove", img)
	if list := oracle(t, "systemd-cryptenroll", "systemd", img); strings.Contains(list, "tpm2") {
		t.Fatalf("systemd-cryptenroll still lists a tpm2 keyslot:\n%s", list)
	}
}
