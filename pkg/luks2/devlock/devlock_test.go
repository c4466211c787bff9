package devlock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRegularFileLocks: on a regular file the lock is the file itself;
// shared locks coexist, an exclusive one excludes them.
func TestRegularFileLocks(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hdr.img")
	if err := os.WriteFile(p, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	r1, err := TryAcquire(p, false)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := TryAcquire(p, false)
	if err != nil {
		t.Fatalf("second shared lock: %v", err)
	}
	if _, err := TryAcquire(p, true); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("exclusive lock under shared ones: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Acquire(ctx, p, true); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for the exclusive lock: %v", err)
	}
	r1.Release()
	r2.Release()
	w, err := Acquire(context.Background(), p, true)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Exclusive() {
		t.Fatal("not exclusive")
	}
	w.Release()
	if _, err := TryAcquire(filepath.Join(t.TempDir()), false); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("lock on a directory: %v", err)
	}
}
