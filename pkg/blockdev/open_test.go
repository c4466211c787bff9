package blockdev_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/blockdev/internal/devtest"
	"github.com/atrest/atrest/pkg/loop"
)

func inspect(t *testing.T, path string) *blockdev.Device {
	t.Helper()
	d, err := blockdev.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestOpenExclusiveKeepsTheKernelOut(t *testing.T) {
	dev := devtest.Loop(t, 32*mib)
	devtest.Run(t, "mkfs.ext4", "-q", "-F", dev.Path)
	h, err := blockdev.OpenExclusive(context.Background(), inspect(t, dev.Path))
	if err != nil {
		t.Fatal(err)
	}
	// While we hold it, neither a mount nor a second exclusive opener gets in.
	if err := unix.Mount(dev.Path, t.TempDir(), "ext4", 0, ""); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("mount during exclusive open: %v, want EBUSY", err)
	}
	_, err = blockdev.OpenExclusive(context.Background(), inspect(t, dev.Path))
	if !errors.Is(err, blockdev.ErrBusy) {
		t.Fatalf("second OpenExclusive = %v, want ErrBusy", err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	devtest.Mount(t, dev.Path, "ext4") // released
}

func TestOpenExclusiveWaitsForTheLock(t *testing.T) {
	dev := devtest.Loop(t, 32*mib)
	other, err := os.Open(dev.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := unix.Flock(int(other.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, err = blockdev.OpenExclusive(context.Background(), inspect(t, dev.Path))
	var busy *blockdev.BusyError
	if !errors.As(err, &busy) || !busy.Locked || !errors.Is(err, blockdev.ErrInUse) {
		t.Fatalf("OpenExclusive under another's lock = %v, want a locked BusyError", err)
	}
	if want := dev.Path + " is locked by another process (flock)"; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
}

func TestOpenExclusiveReadOnly(t *testing.T) {
	dev := devtest.Attach(t, devtest.Image(t, 32*mib), loop.Options{ReadOnly: true})
	d := inspect(t, dev.Path)
	if !d.ReadOnly {
		t.Fatal("read-only loop device not reported read-only")
	}
	if _, err := blockdev.OpenExclusive(context.Background(), d); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Fatalf("OpenExclusive = %v, want ErrReadOnly", err)
	}
}

func TestOpenExclusiveNoticesAReplacedPath(t *testing.T) {
	img := devtest.Image(t, 1*mib)
	d := inspect(t, img)
	// Keep the old inode alive so the new file cannot reuse its number.
	if err := os.Rename(img, img+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, make([]byte, 1*mib), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := blockdev.OpenExclusive(context.Background(), d); err == nil {
		t.Fatal("opened a file that replaced the inspected one")
	}
}
