package keyfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/pkg/kms/internal/keyfile"
)

func TestReadRefusesLooseFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret-id")
	if err := os.WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := keyfile.Read(p, 100, true)
	if err != nil {
		t.Fatal(err)
	}
	if string(k.Bytes()) != "s3cret" {
		t.Errorf("read %d bytes, want the content without its newline", k.Len())
	}
	k.Wipe()
	for _, mode := range []os.FileMode{0o640, 0o604, 0o666} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := keyfile.Read(p, 100, true); !errors.Is(err, keyfile.ErrInsecure) {
			t.Errorf("mode %04o: %v, want ErrInsecure", mode, err)
		}
	}
	if err := os.Chmod(p, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := keyfile.Read(p, 100, true); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.WriteFile(bin, []byte{1, 2, '\n'}, 0o600); err != nil {
		t.Fatal(err)
	}
	if k, err := keyfile.Read(bin, 100, false); err != nil || k.Len() != 3 {
		t.Errorf("binary file ending in 0x0a: %v, %d bytes, want all 3", err, k.Len())
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	if _, err := keyfile.Read(link, 100, true); err == nil {
		t.Error("a symbolic link was followed")
	}
	if _, err := keyfile.Read(p, 3, true); err == nil {
		t.Error("a file over the limit was accepted")
	}
}

func TestWriteAtomicIsPrivate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := keyfile.WriteAtomic(p, []byte("new")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "new" || fi.Mode().Perm() != 0o600 {
		t.Errorf("after WriteAtomic: %q mode %04o", b, fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %d entries", len(entries))
	}
}
