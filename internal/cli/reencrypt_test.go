package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/swtpmtest"
)

// atrest reencrypt on a closed image: the JSON result names the keyslots
// and the bytes re-encrypted, progress goes to stderr, status stays
// healthy, and a second run re-encrypts again under yet another key.
func TestReencryptCommand(t *testing.T) {
	n := newNode(t)
	img := n.volume("data1")
	r := n.expect(ExitOK, "-o", "json", "reencrypt", img)
	var doc struct {
		Schema  int
		Volumes []struct {
			Name       string
			OldKeyslot int `json:"old_keyslot"`
			NewKeyslot int `json:"new_keyslot"`
			Bytes      uint64
			Resumed    bool
			Error      string
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("%v: %s", err, r)
	}
	if len(doc.Volumes) != 1 || doc.Volumes[0].Bytes != 4<<20 || doc.Volumes[0].Resumed || doc.Volumes[0].Error != "" || doc.Volumes[0].OldKeyslot == doc.Volumes[0].NewKeyslot {
		t.Fatalf("document: %s", r.stdout)
	}
	if !strings.Contains(r.stderr, "reencrypt data1: 100%") {
		t.Fatalf("no progress on stderr: %s", r)
	}
	n.expect(ExitOK, "status", img)
	r = n.expect(ExitOK, "reencrypt", img)
	if !strings.Contains(r.stdout, "data1: re-encrypted 4194304 bytes") {
		t.Fatalf("text output: %s", r)
	}
}

// -o json with a printed recovery key is refused before anything is
// written: the key would reach stdout only after the old one is gone.
func TestReencryptRefusesJSONPrint(t *testing.T) {
	n := newNode(t)
	img := n.volume("data1")
	r := n.expect(ExitUsage, "-o", "json", "reencrypt", img, "--recovery-mode", "print")
	if !strings.Contains(r.stderr, "recovery mode print") {
		t.Fatalf("%s", r)
	}
}

// The terminal's progress line: a bar, the percentage, the rate and the
// time left at that rate; before any bytes moved, no rate is guessed.
func TestProgressLine(t *testing.T) {
	got := progressLine("reencrypt data1", 1<<30, 4<<30, 1<<30, 4*time.Second)
	want := "reencrypt data1: [#######-----------------------]  25%     268 MB/s  ETA 12s"
	if strings.TrimRight(got, " ") != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	if got := progressLine("reencrypt data1", 0, 4<<30, 0, 0); strings.Contains(got, "ETA") || !strings.Contains(got, "  0%") {
		t.Fatalf("the first line guesses a rate: %q", got)
	}
}

// atrest encrypt on an image holding a shrunk ext4: the JSON document
// names the bytes encrypted and the backup, status is healthy afterwards;
// a file system that fills its device is refused (exit 4) naming
// resize2fs, and the device is unchanged.
func TestEncryptCommand(t *testing.T) {
	testutil.RequireCommand(t, "mkfs.ext4", "e2fsprogs")
	n := newNode(t)
	img := filepath.Join(n.dir, "fs.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := os.Truncate(img, 96<<20); err != nil {
		t.Fatal(err)
	}
	r := n.expect(ExitOK, "-o", "json", "encrypt", img, "--name", "enc1", "--recovery-mode", "none")
	var doc struct {
		Name    string
		Bytes   uint64
		Resumed bool
		Backup  string
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("%v: %s", err, r)
	}
	if doc.Name != "enc1" || doc.Bytes != 64<<20 || doc.Resumed || doc.Backup == "" {
		t.Fatalf("document: %s", r.stdout)
	}
	if !strings.Contains(r.stderr, "encrypt enc1: 100%") {
		t.Fatalf("no progress on stderr: %s", r)
	}
	n.expect(ExitOK, "status", img)

	full := filepath.Join(n.dir, "full.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", full, "64M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	before, _ := os.ReadFile(full)
	if r := n.expect(ExitRefused, "encrypt", full, "--name", "enc2"); !strings.Contains(r.stderr, "resize2fs") {
		t.Fatalf("%s", r)
	}
	if after, _ := os.ReadFile(full); !bytes.Equal(before, after) {
		t.Fatal("the refused encrypt changed the device")
	}
}

// A LUKS1 volume (cryptsetup's own) is refused by atrest reencrypt with
// the not-LUKS2 exit code and the conversion command, byte-identical.
func TestReencryptRefusesLUKS1(t *testing.T) {
	n := newNode(t)
	img := n.image("luks1.img", 8)
	kf := filepath.Join(n.dir, "luks1.key")
	if err := os.WriteFile(kf, []byte("luks1 passphrase"), 0o600); err != nil {
		t.Fatal(err)
	}
	oracle(t, "cryptsetup", "cryptsetup-bin", "--batch-mode", "luksFormat", "--type", "luks1", "--pbkdf-force-iterations", "1000", "--key-file", kf, img)
	before := sum(t, img)
	r := n.expect(ExitNotLUKS2, "reencrypt", img)
	if !strings.Contains(r.stderr, "LUKS1") || !strings.Contains(r.stderr, "cryptsetup convert --type luks2") {
		t.Fatalf("reencrypt of a LUKS1 volume: %s", r)
	}
	if sum(t, img) != before {
		t.Fatal("the refused reencrypt changed the image")
	}
}

// A volume with a PIN TPM keyslot: reencrypt without the PIN is a usage
// error naming --pin-file, a wrong PIN is the TPM's refusal, both leaving
// the image byte-identical; with --pin-file the keyslot is re-sealed and
// opens the re-encrypted volume with the PIN (open --test through the TPM
// keyslot, the local keystore taken away).
func TestReencryptPINKeyslotCommand(t *testing.T) {
	n := newTPMKeyslotNode(t, swtpmtest.Start(t))
	before, err := os.ReadFile(n.pvol)
	if err != nil {
		t.Fatal(err)
	}
	unchanged := func(what string) {
		if now, _ := os.ReadFile(n.pvol); !bytes.Equal(now, before) {
			t.Fatalf("%s changed the image", what)
		}
	}
	if r := n.expect(ExitUsage, "reencrypt", n.pvol); !strings.Contains(r.stderr, "--pin-file") {
		t.Fatalf("without the PIN: %s", r)
	}
	unchanged("a reencrypt refused for want of a PIN")
	if r := n.expect(ExitKeyRejected, "reencrypt", n.pvol, "--pin-file", n.file("wrong", "2468\n")); !strings.Contains(r.stderr, "PIN") {
		t.Fatalf("a wrong PIN: %s", r)
	}
	unchanged("a reencrypt with a wrong PIN")
	n.expect(ExitOK, "reencrypt", n.pvol, "--pin-file", n.pinFile)
	n.expect(ExitOK, "status", n.pvol)
	n.breakKMS()
	if r := n.expect(ExitOK, "open", "--test", n.pvol, "--pin-file", n.pinFile); !strings.Contains(r.stdout, "pvol: unlocks (by tpm-keyslot)") {
		t.Fatalf("open --test through the re-sealed PIN keyslot: %s", r)
	}
}
