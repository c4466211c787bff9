package luks2

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/luks2"
)

// TestHeaderBackupInterop: atrest's backup is byte for byte cryptsetup's;
// each tool restores the other's backup; a restore onto another volume is
// refused unless forced.
func TestHeaderBackupInterop(t *testing.T) {
	requireTier(t)
	path := loopDevice(t, 40*mib)
	h, vk := formatAtrest(t, path, luks2.FormatOptions{})
	dev := openDev(t, path)
	dir := t.TempDir()
	ours, theirs := filepath.Join(dir, "atrest.bak"), filepath.Join(dir, "cryptsetup.bak")
	if err := luks2.BackupFile(ctx(t), dev, ours); err != nil {
		t.Fatal(err)
	}
	cryptsetup(t, "", "luksHeaderBackup", path, "--header-backup-file", theirs)
	a, _ := os.ReadFile(ours)
	b, _ := os.ReadFile(theirs)
	if len(a) != 16*mib || !bytes.Equal(a, b) {
		t.Fatalf("atrest backup (%d bytes) differs from cryptsetup's (%d bytes)", len(a), len(b))
	}
	if st, _ := os.Stat(ours); st.Mode().Perm() != 0o400 {
		t.Errorf("backup mode %v, want 0400", st.Mode().Perm())
	}
	platform := keyFile(t, platformPass)

	// Both copies destroyed: cryptsetup restores atrest's backup.
	wipeHeaders(t, path)
	if _, _, err := runCryptsetup("", "open", "--test-passphrase", "--key-file", platform, path); err == nil {
		t.Fatal("device opens with both header copies wiped")
	}
	cryptsetup(t, "", "luksHeaderRestore", path, "--header-backup-file", ours)
	if got := dumpVolumeKey(t, path, platform); !bytes.Equal(got, vk.Bytes()) {
		t.Fatal("after cryptsetup restored atrest's backup, the volume key differs")
	}

	// Both copies destroyed again: atrest restores cryptsetup's backup.
	wipeHeaders(t, path)
	if _, err := luks2.RestoreFile(ctx(t), dev, theirs, luks2.RestoreOptions{}); err == nil {
		t.Fatal("restore onto a device without a readable header ran without force")
	}
	restored, err := luks2.RestoreFile(ctx(t), dev, theirs, luks2.RestoreOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if restored.UUID != h.UUID {
		t.Fatalf("restored UUID %s, want %s", restored.UUID, h.UUID)
	}
	cryptsetup(t, "", "open", "--test-passphrase", "--key-file", platform, path)
	got, _, err := restored.Open(dev, key(t, platformPass))
	if err != nil || !got.Equal(vk) {
		t.Fatalf("atrest open after restore: %v", err)
	}
	got.Wipe()

	// Damaged primary copy only: atrest restores without force (the UUID
	// still shows) and cryptsetup agrees with the result.
	damage(t, path, 4096+100)
	if _, err := luks2.RestoreFile(ctx(t), dev, ours, luks2.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	cryptsetup(t, "", "open", "--test-passphrase", "--key-file", platform, path)

	// A backup of another volume is refused without force.
	other := loopDevice(t, 40*mib)
	formatAtrest(t, other, luks2.FormatOptions{})
	_, err = luks2.RestoreFile(ctx(t), openDev(t, other), ours, luks2.RestoreOptions{})
	if !errors.Is(err, luks2.ErrUUIDMismatch) {
		t.Fatalf("restore onto another volume: %v, want ErrUUIDMismatch", err)
	}
}

// TestRepairInterop: atrest repairs what cryptsetup sees as damaged, and
// cryptsetup repairs atrest's volumes.
func TestRepairInterop(t *testing.T) {
	requireTier(t)
	path := loopDevice(t, 40*mib)
	h, _ := formatAtrest(t, path, luks2.FormatOptions{})
	dev := openDev(t, path)
	platform := keyFile(t, platformPass)
	for _, c := range []struct {
		name string
		off  int64
	}{{"primary", 4096 + 50}, {"secondary", 16384 + 4096 + 50}} {
		t.Run(c.name, func(t *testing.T) {
			damage(t, path, c.off)
			before := read(t, dev)
			if !before.NeedsRepair() {
				t.Fatal("damage not detected")
			}
			if _, err := luks2.Repair(ctx(t), dev); err != nil {
				t.Fatal(err)
			}
			after := read(t, dev)
			if after.NeedsRepair() || after.UUID != h.UUID {
				t.Fatalf("after repair: copies %+v", after.Copies)
			}
			// cryptsetup's own repair finds nothing to do and the header
			// still opens.
			if out := cryptsetup(t, "", "repair", "--debug", path); strings.Contains(out, "requires recovery") {
				t.Errorf("cryptsetup still sees damage:\n%s", out)
			}
			cryptsetup(t, "", "open", "--test-passphrase", "--key-file", platform, path)
		})
	}
	damage(t, path, 4096+50)
	cryptsetup(t, "", "repair", path)
	if after := read(t, dev); after.NeedsRepair() {
		t.Fatalf("cryptsetup repair left atrest's header damaged: %+v", after.Copies)
	}
}

// TestEraseInterop: after atrest's crypto-erase cryptsetup sees no keyslot
// and no token, and no passphrase opens the volume.
func TestEraseInterop(t *testing.T) {
	requireTier(t)
	path := loopDevice(t, 40*mib)
	formatAtrest(t, path, luks2.FormatOptions{})
	dev := openDev(t, path)
	if _, err := luks2.Erase(ctx(t), dev); err != nil {
		t.Fatal(err)
	}
	meta := cryptsetup(t, "", "luksDump", "--dump-json-metadata", path)
	if !strings.Contains(meta, `"keyslots":{`) || strings.Contains(meta, `"type":"luks2"`) || strings.Contains(meta, `"atrest"`) {
		t.Fatalf("keyslots or tokens survive the erase:\n%s", meta)
	}
	for _, p := range []string{platformPass, recoveryPass} {
		if _, _, err := runCryptsetup("", "open", "--test-passphrase", "--key-file", keyFile(t, p), path); err == nil {
			t.Fatal("a passphrase still opens the erased volume")
		}
	}
	// Nothing of the old keyslots remains in either header copy or the
	// keyslots area: the first keyslot area holds no trace of its content.
	h := read(t, dev)
	if len(h.Keyslots) != 0 || len(h.Tokens) != 0 {
		t.Fatalf("erased header: %d keyslots, %d tokens", len(h.Keyslots), len(h.Tokens))
	}
}

func wipeHeaders(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, 32768), 0); err != nil {
		t.Fatal(err)
	}
	f.Sync()
}

func damage(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	f.ReadAt(b, off)
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	f.Sync()
}
