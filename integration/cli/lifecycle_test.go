package cli

import (
	"os"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
)

// The embedded default end to end, as a provisioning script drives it:
// format with JSON output, status, rekey, status, and cryptsetup's view
// after each step.
func TestLifecycleLocalKeystore(t *testing.T) {
	n := localNode(t, "print")
	dev := disk(t, 64)

	// Flags after the device, -o json after the command: the form the docs use.
	f := jsonOf[formatJSON](t, n.ok("format", dev, "--name", "data1", "-o", "json"))
	if f.Name != "data1" || f.Device != dev || f.UUID == "" || f.SectorSize != 4096 || f.KMS.Backend != "local" || f.KMS.KeyVersion != 1 {
		t.Fatalf("format JSON: %+v", f)
	}
	if f.Recovery.Mode != "print" || len(f.Recovery.Key) != 71 || f.Recovery.Keyslot == f.PlatformKeyslot {
		t.Fatalf("format JSON recovery: %+v", f.Recovery)
	}
	if st, err := os.Stat(f.Backup); err != nil || st.Mode().Perm() != 0o400 {
		t.Fatalf("header backup %s: %v", f.Backup, err)
	}
	rk := f.Recovery.Key

	// cryptsetup sees a LUKS2 volume with both tokens and takes the
	// recovery key; it refuses a wrong one.
	dump := sh(t, "cryptsetup", "luksDump", dev)
	for _, want := range []string{"Version:       \t2", "aes-xts-plain64", "atrest", "systemd-recovery", "Label:         \tdata1"} {
		if !strings.Contains(dump, want) {
			t.Errorf("luksDump lacks %q:\n%s", want, dump)
		}
	}
	if !cryptsetupAccepts(t, dev, rk) || cryptsetupAccepts(t, dev, strings.Replace(rk, rk[:1], "v", 1)+"x") {
		t.Fatal("cryptsetup does not accept exactly the printed recovery key")
	}

	s := jsonOf[statusJSON](t, n.ok("-o", "json", "status", "data1"))
	v := s.Volumes
	if s.Schema != 1 || !s.Healthy || len(v) != 1 || v[0].Name != "data1" || v[0].State != "closed" || v[0].KeyBits != 512 || !v[0].Backup.Current || !v[0].Recovery.Present {
		t.Fatalf("status after format: %+v", s)
	}
	if r := roles(s); r[f.PlatformKeyslot] != "platform" || r[f.Recovery.Keyslot] != "recovery" || len(r) != 2 {
		t.Fatalf("keyslot roles after format: %v", r)
	}

	// Rekey: a new platform keyslot replaces the old; the recovery key and
	// the volume key stay.
	vkBefore := volumeKey(t, dev, rk)
	rekey := jsonOf[struct {
		Volumes []struct {
			OldKeyslot int `json:"old_keyslot"`
			NewKeyslot int `json:"new_keyslot"`
		} `json:"volumes"`
	}](t, n.ok("-o", "json", "rekey", "data1"))
	if len(rekey.Volumes) != 1 || rekey.Volumes[0].OldKeyslot != f.PlatformKeyslot || rekey.Volumes[0].NewKeyslot == f.PlatformKeyslot {
		t.Fatalf("rekey JSON: %+v", rekey)
	}
	s = jsonOf[statusJSON](t, n.ok("-o", "json", "status", "data1"))
	r := roles(s)
	if !s.Healthy || r[rekey.Volumes[0].NewKeyslot] != "platform" || r[f.PlatformKeyslot] != "" || r[f.Recovery.Keyslot] != "recovery" {
		t.Fatalf("status after rekey: roles %v, %+v", r, s)
	}
	if !cryptsetupAccepts(t, dev, rk) {
		t.Fatal("the recovery key stopped working after rekey")
	}
	if volumeKey(t, dev, rk) != vkBefore {
		t.Fatal("rekey changed the volume key: the data would be lost")
	}
	if !strings.Contains(sh(t, "cryptsetup", "luksDump", dev), "atrest") {
		t.Fatal("luksDump lost the atrest token after rekey")
	}

	// Text status: one line per volume, healthy.
	text := n.ok("status", "data1").stdout
	if !strings.Contains(text, "data1") || !strings.Contains(text, "closed") || !strings.Contains(text, "ok") {
		t.Fatalf("text status:\n%s", text)
	}
}

// volumeKey dumps the volume key with cryptsetup (key file, never argv).
func volumeKey(t *testing.T, dev, key string) string {
	t.Helper()
	vkFile := t.TempDir() + "/vk"
	sh(t, "cryptsetup", "luksDump", "--dump-volume-key", "--volume-key-file", vkFile, "--batch-mode", "--key-file", keyFile(t, key), dev)
	b, err := os.ReadFile(vkFile)
	if err != nil || len(b) != 64 {
		t.Fatalf("volume key file: %v (%d bytes)", err, len(b))
	}
	return string(b)
}

// KEK rotation with the local keystore: status flags the stale token
// (exit 3), rewrap moves it without touching keyslots, retire cuts the
// old version off only after that.
func TestRotateRewrapRetireLocal(t *testing.T) {
	n := localNode(t, "none")
	dev := disk(t, 64)
	f := jsonOf[formatJSON](t, n.ok("-o", "json", "format", dev, "--name", "kek1"))

	n.ok("kms", "rotate")
	s := jsonOf[statusJSON](t, n.expect(3, nil, "-o", "json", "status", "kek1"))
	k := s.Volumes[0].KMS
	if s.Healthy || k == nil || !k.Stale || k.KeyVersion != 1 || k.LatestVersion != 2 {
		t.Fatalf("status after rotate: %+v", s)
	}
	if p := strings.Join(s.Volumes[0].Problems, "\n"); !strings.Contains(p, "atrest rewrap kek1") {
		t.Fatalf("the problem does not say how to fix it: %q", p)
	}
	before := sh(t, "cryptsetup", "luksDump", dev)
	out := n.ok("rewrap", "kek1").stdout
	if !strings.Contains(out, "version 1 -> 2") {
		t.Fatalf("rewrap output: %s", out)
	}
	after := sh(t, "cryptsetup", "luksDump", dev)
	if keyslotSection(before) != keyslotSection(after) {
		t.Fatal("rewrap changed keyslots")
	}
	s = jsonOf[statusJSON](t, n.ok("-o", "json", "status", "kek1"))
	if !s.Healthy || s.Volumes[0].KMS.KeyVersion != 2 {
		t.Fatalf("status after rewrap: %+v", s)
	}
	n.ok("kms", "retire", "--min-version", "2")
	// The volume still unlocks through the KMS: a rekey needs the unwrap.
	n.ok("rekey", "kek1")
	_ = f
}

func keyslotSection(dump string) string {
	start := strings.Index(dump, "Keyslots:")
	end := strings.Index(dump, "Tokens:")
	if start < 0 || end < start {
		return dump
	}
	return dump[start:end]
}

// Header backup, check, repair and restore, and what a damaged header
// looks like to every command.
func TestHeaderBackupCheckRepairRestore(t *testing.T) {
	n := localNode(t, "print")
	dev := disk(t, 64)
	f := jsonOf[formatJSON](t, n.ok("-o", "json", "format", dev, "--name", "hdr1"))

	extra := n.dir + "/hdr1.backup"
	n.ok("header", "backup", "hdr1", "--file", extra)
	if st, err := os.Stat(extra); err != nil || st.Mode().Perm() != 0o400 || st.Size() != 16<<20 {
		t.Fatalf("backup file: %v %v", st, err)
	}

	// One copy damaged: check says so (exit 3), --repair fixes it.
	smash(t, dev, 0x4000, 4096)
	r := n.expect(3, nil, "header", "check", dev)
	if !strings.Contains(r.stdout, "damaged") || !strings.Contains(r.stdout, "--repair") {
		t.Fatalf("check of a damaged copy: %s", r)
	}
	n.ok("header", "check", "--repair", dev)
	if r := n.ok("header", "check", dev); strings.Contains(r.stdout, "damaged") {
		t.Fatalf("check after --repair still finds damage: %s", r)
	}

	// Both copies damaged (their JSON areas): every command exits 7, and
	// check names the backup.
	smash(t, dev, 0x1000, 4096)
	smash(t, dev, 0x5000, 4096)
	n.expect(7, []string{"both header copies are damaged", "hint: restore a header backup"}, "rekey", dev)
	n.expect(7, []string{f.Backup, "atrest header restore " + dev}, "header", "check", dev)
	n.ok("header", "restore", dev, "--backup", f.Backup, "--force")
	s := jsonOf[statusJSON](t, n.ok("-o", "json", "status", "hdr1"))
	if !s.Healthy || s.Volumes[0].UUID != f.UUID {
		t.Fatalf("status after restore: %+v", s)
	}
	if !cryptsetupAccepts(t, dev, f.Recovery.Key) {
		t.Fatal("the restored header does not take the recovery key")
	}
	n.ok("rekey", "hdr1")

	// Headers wiped outright (no LUKS magic left): check still finds the
	// backup of this device.
	smash(t, dev, 0, 0x8000)
	n.expect(6, []string{"no LUKS header", "atrest header restore " + dev}, "header", "check", dev)
}

// smash overwrites n bytes at off with garbage.
func smash(t *testing.T, dev string, off int64, n int) {
	t.Helper()
	fh, err := os.OpenFile(dev, os.O_WRONLY|os.O_SYNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	junk := []byte(strings.Repeat("damaged!", n/8+1))[:n]
	if _, err := fh.WriteAt(junk, off); err != nil {
		t.Fatal(err)
	}
}

// Crypto-erase: confirmation first, then nothing opens the data, and the
// backups atrest kept are gone.
func TestErase(t *testing.T) {
	n := localNode(t, "print")
	dev := disk(t, 64)
	f := jsonOf[formatJSON](t, n.ok("-o", "json", "format", dev, "--name", "gone1"))
	before := testutil.SHA256(t, dev)
	n.expect(2, []string{"needs --yes", "hint: run: atrest erase gone1 --yes --confirm gone1"}, "erase", "gone1")
	n.expect(2, []string{"confirm with the volume's name"}, "erase", "gone1", "--yes", "--confirm", "other")
	if testutil.SHA256(t, dev) != before {
		t.Fatal("an unconfirmed erase changed the device")
	}
	n.ok("erase", "gone1", "--yes", "--confirm", "gone1")
	if cryptsetupAccepts(t, dev, f.Recovery.Key) {
		t.Fatal("the recovery key still opens an erased volume")
	}
	if _, err := os.Stat(f.Backup); !os.IsNotExist(err) {
		t.Fatalf("the header backup survived the erase: %v", err)
	}
	if dump := sh(t, "cryptsetup", "luksDump", dev); strings.Contains(dump, "pbkdf2") && strings.Contains(dump, "Keyslots:\n  0") {
		t.Fatalf("keyslots left after erase:\n%s", dump)
	}
}

// Adopting a volume cryptsetup made with a passphrase.
func TestAdoptCryptsetupVolume(t *testing.T) {
	n := localNode(t, "none")
	dev := disk(t, 64)
	pass := keyFile(t, "an old passphrase")
	sh(t, "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", pass, dev)

	n.expect(6, []string{"not an atrest volume", "hint: take it over with: atrest adopt"}, "rekey", dev)
	n.expect(8, nil, "adopt", dev, "--name", "old1", "--key-file", keyFile(t, "wrong passphrase"))
	r := n.ok("adopt", dev, "--name", "old1", "--key-file", pass, "--remove-old")
	if !strings.Contains(r.stdout, "old keyslot 0 removed") {
		t.Fatalf("adopt output: %s", r)
	}
	if cryptsetupAccepts(t, dev, "an old passphrase") {
		t.Fatal("the old passphrase still opens after --remove-old")
	}
	s := jsonOf[statusJSON](t, n.ok("-o", "json", "status", "old1"))
	if !s.Healthy || s.Volumes[0].KMS == nil || s.Volumes[0].KMS.Backend != "local" {
		t.Fatalf("status after adopt: %+v", s)
	}
	n.expect(4, []string{"already an atrest volume"}, "adopt", dev, "--name", "again", "--key-file", pass)
}
