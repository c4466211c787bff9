package blockdev

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
)

// ZeroRange clears exactly the range asked for and keeps the file's size:
// what a format relies on to destroy an old header.
func TestZeroRangeClearsOnlyTheRange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	data := make([]byte, 3<<20)
	rand.Read(data)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := &Handle{File: f}
	if err := h.ZeroRange(4096, 2<<20); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(data)
	clear(want[4096 : 4096+2<<20])
	if !bytes.Equal(got, want) {
		t.Fatal("ZeroRange did not zero exactly [4096, 4096+2 MiB) of a file of unchanged size")
	}
}
