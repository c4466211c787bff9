package loop

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
)

func TestAttachReadsBackingFile(t *testing.T) {
	testutil.RequireRoot(t)
	img := filepath.Join(t.TempDir(), "img")
	want := bytes.Repeat([]byte("atrest-loop-"), 1<<17)
	want = want[:1<<20]
	if err := os.WriteFile(img, want, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := Attach(img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s reads %d bytes that differ from the backing file", d.Path, len(got))
	}
	// Writes through the device reach the file.
	f, err := os.OpenFile(d.Path, os.O_WRONLY|os.O_SYNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("WRITTEN"), 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := d.Detach(); err != nil {
		t.Fatal(err)
	}
	back, _ := os.ReadFile(img)
	if string(back[4096:4103]) != "WRITTEN" {
		t.Fatal("write through the loop device did not reach the backing file")
	}
	if sys, err := os.ReadFile("/sys/block/" + filepath.Base(d.Path) + "/loop/backing_file"); err == nil && len(sys) > 0 {
		t.Fatalf("%s still attached after Detach (backing %s)", d.Path, sys)
	}
}

func TestAttachReadOnly(t *testing.T) {
	testutil.RequireRoot(t)
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := Attach(img, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Detach()
	ro, err := os.ReadFile("/sys/block/" + filepath.Base(d.Path) + "/ro")
	if err != nil {
		t.Fatal(err)
	}
	if string(bytes.TrimSpace(ro)) != "1" {
		t.Fatalf("%s is not read-only (sysfs ro=%q)", d.Path, ro)
	}
	f, err := os.OpenFile(d.Path, os.O_WRONLY|os.O_SYNC, 0)
	if err == nil {
		_, err = f.Write(make([]byte, 4096))
		f.Close()
	}
	if err == nil {
		t.Fatal("wrote to a read-only loop device")
	}
}

func TestAttachMissingFile(t *testing.T) {
	if _, err := Attach(filepath.Join(t.TempDir(), "absent"), Options{}); err == nil {
		t.Fatal("attaching a missing file succeeded")
	}
}

// AttachFile backs the device with the open file it is given, even when
// the path now names another file.
func TestAttachFileUsesTheOpenFile(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	want := bytes.Repeat([]byte("original"), 1<<17)
	if err := os.WriteFile(img, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, bytes.Repeat([]byte("replaced"), 1<<17), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, img); err != nil {
		t.Fatal(err)
	}
	d, err := AttachFile(f, img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Detach()
	got := make([]byte, len(want))
	if _, err := d.File().ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s reads %q..., not the file it was given", d.Path, got[:16])
	}
}
