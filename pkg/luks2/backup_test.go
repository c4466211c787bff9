package luks2

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestBackupSparseRestores: a sparse backup of a device cryptsetup made
// (two keyslots, stale bytes in the unused part of the keyslots area)
// keeps the headers and the keyslots and nothing else (its blocks on disk
// are a fraction of the 16 MiB), and restores with cryptsetup's
// luksHeaderRestore and with Restore onto a device whose headers were
// wiped: both keys open the volume again, and the stale bytes are gone.
func TestBackupSparseRestores(t *testing.T) {
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		t.Skip("cryptsetup not installed")
	}
	ctx := context.Background()
	dir := t.TempDir()
	img := imageFile(t, dir, 20<<20)
	k0, k1 := filepath.Join(dir, "k0"), filepath.Join(dir, "k1")
	os.WriteFile(k0, []byte("zero"), 0o600)
	os.WriteFile(k1, []byte("one"), 0o600)
	runTool(t, "cryptsetup", "luksFormat", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", k0, img)
	runTool(t, "cryptsetup", "luksAddKey", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", k0, img, k1)
	stale := make([]byte, 64<<10)
	rand.Read(stale)
	const staleAt = 12 << 20 // in the keyslots area, past both keyslots
	writeAt(t, img, stale, staleAt)

	dev, err := OpenFile(img, true)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	h, err := Read(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(dir, "backup")
	f, err := os.OpenFile(backup, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	n, err := BackupSparse(ctx, dev, f, nil)
	if err == nil {
		err = f.Truncate(n)
	}
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	st, err := os.Stat(backup)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != int64(roundUp(h.AreasEnd(), backupAlign)) {
		t.Fatalf("backup of %d bytes, want %d (luksHeaderBackup's size)", st.Size(), h.AreasEnd())
	}
	kept := uint64(2 * h.MetadataSize)
	for _, k := range h.Keyslots {
		kept += k.Area.Size
	}
	if used := uint64(st.Sys().(*syscall.Stat_t).Blocks) * 512; used > kept+64<<10 {
		t.Fatalf("sparse backup occupies %d bytes on disk; the headers and keyslots are %d", used, kept)
	}

	wipeHeaders := func() {
		t.Helper()
		writeAt(t, img, make([]byte, 2*h.MetadataSize), 0)
	}
	opens := func(how string) {
		t.Helper()
		for _, k := range []string{k0, k1} {
			runTool(t, "cryptsetup", "open", "--test-passphrase", "--key-file", k, img)
		}
		got := make([]byte, len(stale))
		d, _ := os.Open(img)
		d.ReadAt(got, staleAt)
		d.Close()
		if bytes.Equal(got, stale) || !bytes.Equal(got, make([]byte, len(got))) {
			t.Fatalf("after %s the unused keyslots area does not read as zeros", how)
		}
	}

	wipeHeaders()
	runTool(t, "cryptsetup", "luksHeaderRestore", "--header-backup-file", backup, img)
	opens("cryptsetup luksHeaderRestore")

	wipeHeaders()
	writeAt(t, img, stale, staleAt)
	if _, err := RestoreFile(ctx, dev, backup, RestoreOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	opens("Restore")
	h2, err := Read(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	vk, _, err := h2.Open(dev, pass(t, "one"))
	if err != nil {
		t.Fatalf("restored header: %v", err)
	}
	vk.Wipe()
}

// imageFile is an empty (sparse) image file of size bytes in dir.
func imageFile(t *testing.T, dir string, size int64) string {
	t.Helper()
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	return img
}

func writeAt(t *testing.T, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
