package volume

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/looptest"
	"github.com/atrest/atrest/pkg/dmcrypt"
)

// pointAt makes the symlink link name target, replacing it in one rename
// as an attacker (or udev) would.
func pointAt(t *testing.T, link, target string) {
	t.Helper()
	tmp := link + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// clonedBehindLink formats an image as name, makes a byte-for-byte clone
// of it (same UUID, same keyslots) and a symlink to the original, and
// returns both images, the link and the volume found through the link.
func clonedBehindLink(t *testing.T, m *Manager, name string) (a, b, link string, v *Volume) {
	t.Helper()
	ctx := context.Background()
	a = testImage(t)
	if _, err := m.Format(ctx, FormatOptions{Device: a, Name: name}); err != nil {
		t.Fatal(err)
	}
	b = filepath.Join(t.TempDir(), "clone.img")
	if err := os.WriteFile(b, readAll(t, a), 0o600); err != nil {
		t.Fatal(err)
	}
	link = filepath.Join(t.TempDir(), "by-uuid")
	pointAt(t, link, a)
	v, err := m.Find(ctx, link)
	if err != nil {
		t.Fatal(err)
	}
	return a, b, link, v
}

// A device path that names another device after the header was read (a
// by-uuid symlink pointed at a clone of the disk, say) is refused by every
// use case: erase, rekey, header backup and unlock say so and touch
// neither device.
func TestSwappedDevicePathIsRefused(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t)
	a, b, link, v := clonedBehindLink(t, m, "ident")
	pointAt(t, link, b)
	beforeA, beforeB := readAll(t, a), readAll(t, b)

	if _, err := m.Erase(ctx, v, "ident"); !errors.Is(err, ErrDeviceChanged) {
		t.Errorf("erase through a swapped path: %v, want ErrDeviceChanged", err)
	}
	if _, err := m.Rekey(ctx, v, RekeyOptions{}); !errors.Is(err, ErrDeviceChanged) {
		t.Errorf("rekey through a swapped path: %v, want ErrDeviceChanged", err)
	}
	if _, err := m.HeaderBackup(ctx, v, filepath.Join(t.TempDir(), "b.luks2")); !errors.Is(err, ErrDeviceChanged) {
		t.Errorf("header backup through a swapped path: %v, want ErrDeviceChanged", err)
	}
	keys, errs := m.unlock(ctx, []*Volume{v})
	wipeAll(keys)
	if !errors.Is(errs[0], ErrDeviceChanged) {
		t.Errorf("unlock through a swapped path: %v, want ErrDeviceChanged", errs[0])
	}
	if !bytes.Equal(readAll(t, a), beforeA) || !bytes.Equal(readAll(t, b), beforeB) {
		t.Fatal("a refused use case wrote to a device")
	}

	// Pointed back, the same Volume works again.
	pointAt(t, link, a)
	if _, err := m.Rekey(ctx, v, RekeyOptions{}); err != nil {
		t.Fatalf("rekey once the path names the device again: %v", err)
	}
	if !bytes.Equal(readAll(t, b), beforeB) {
		t.Fatal("the rekey wrote to the clone")
	}
}

// sysfsDev is the major:minor the kernel lists for the loop device
// path (/dev/loopN).
func sysfsDev(t *testing.T, path string) string {
	t.Helper()
	return strings.TrimSpace(string(readAll(t, "/sys/class/block/"+filepath.Base(path)+"/dev")))
}

// The dm table of a volume names the device its header was read from, by
// major:minor, even when the path has been pointed at another device
// between the header read and the mapping; a path swapped before the
// device is opened for the mapping is refused.
func TestMappingNamesTheDeviceWhoseHeaderWasRead(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	m := newTestManager(t)
	diskA, diskB := looptest.Disk(t, 24), looptest.Disk(t, 24)
	if _, err := m.Format(ctx, FormatOptions{Device: diskA.Path, Name: "identa", Force: true}); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "disk")
	pointAt(t, link, diskA.Path)
	v, err := m.Find(ctx, link)
	if err != nil {
		t.Fatal(err)
	}

	d, err := v.open(false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pointAt(t, link, diskB.Path)
	p, release, err := mapParams(v, d, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	got, size, err := dmcrypt.BackingDevice(p.Backing)
	if err != nil {
		t.Fatal(err)
	}
	if want := sysfsDev(t, diskA.Path); got != want {
		t.Fatalf("the table names %s, want %s (%s, whose header was read; the path now names %s)", got, want, diskA.Path, sysfsDev(t, diskB.Path))
	}
	if size != 24<<20 {
		t.Errorf("backing size %d, want %d", size, 24<<20)
	}

	if _, err := v.open(false); !errors.Is(err, ErrDeviceChanged) {
		t.Fatalf("opening the swapped path for a mapping: %v, want ErrDeviceChanged", err)
	}
}

// An image file is mapped through a loop device attached to the very file
// whose header was read, not to whatever file the path names by then.
func TestImageLoopDeviceIsBackedByTheFileWhoseHeaderWasRead(t *testing.T) {
	testutil.RequireRoot(t)
	a, b, link, v := clonedBehindLink(t, newTestManager(t), "identimg")
	d, err := v.open(false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pointAt(t, link, b)
	p, release, err := mapParams(v, d, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	devno, _, err := dmcrypt.BackingDevice(p.Backing)
	if err != nil {
		t.Fatal(err)
	}
	backing := strings.TrimSpace(string(readAll(t, "/sys/dev/block/"+devno+"/loop/backing_file")))
	if backing != a {
		t.Fatalf("the loop device %s is backed by %q, want %q (whose header was read)", devno, backing, a)
	}
	if ro := strings.TrimSpace(string(readAll(t, "/sys/dev/block/"+devno+"/ro"))); ro != "0" {
		t.Errorf("a read-write mapping got a read-only loop device (ro=%s)", ro)
	}
}
