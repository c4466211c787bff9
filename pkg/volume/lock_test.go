package volume

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms/backends"
)

// newTestManager is a Manager over a local keystore in a temporary
// directory, with its own lock directory.
func newTestManager(t *testing.T) *Manager {
	t.Helper()
	dir := t.TempDir()
	cfg := &config.Config{KMS: config.BackendLocal, Local: config.Local{Keystore: filepath.Join(dir, "kek")},
		StateDir: filepath.Join(dir, "state"), Recovery: config.Recovery{Mode: config.RecoveryNone}}
	set, err := backends.Open(cfg, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close() })
	return New(cfg, set, WithRunDir(filepath.Join(dir, "run")))
}

func testImage(t *testing.T) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "vol.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 20<<20); err != nil {
		t.Fatal(err)
	}
	return img
}

// Two processes changing one volume never interleave: a rekey waits while
// another holds the volume's lock, then runs; if the other does not let
// go before the caller's deadline, the rekey fails with ErrLocked, names
// the holder's PID and leaves the header as it was.
func TestRekeyWaitsForTheVolumeLock(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	img := testImage(t)
	res, err := m.Format(ctx, FormatOptions{Device: img, Name: "locked"})
	if err != nil {
		t.Fatal(err)
	}
	release, err := m.lock(ctx, res.UUID)
	if err != nil {
		t.Fatal(err)
	}
	header := func() []byte {
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		return b[:16<<20]
	}
	before := header()

	// Deadline first: ErrLocked, the holder named, nothing written.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	v, err := m.Find(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Rekey(short, v, RekeyOptions{})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "holder pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("rekey while locked: %v, want ErrLocked naming pid %d", err, os.Getpid())
	}
	if !bytes.Equal(header(), before) {
		t.Fatal("a rekey that could not take the lock changed the header")
	}

	// Then a rekey that waits: it runs once the lock is released.
	done := make(chan error, 1)
	go func() {
		_, err := m.Rekey(ctx, v, RekeyOptions{})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("rekey finished while another held the lock: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if !bytes.Equal(header(), before) {
		t.Fatal("the header changed while another held the lock")
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("rekey after the lock was released: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("rekey still waiting 30s after the lock was released")
	}
	after, err := m.Find(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	if after.Platform.Keyslot == v.Platform.Keyslot {
		t.Errorf("rekey kept the platform keyslot %d", v.Platform.Keyslot)
	}
}
