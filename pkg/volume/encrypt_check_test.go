package volume

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/looptest"
	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/luks2"
)

// image makes a sparse image file of size MiB.
func image(t *testing.T, mib int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(mib << 20); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// refusedUnchanged checks that CheckEncryptInPlace refuses path with an
// error of kind want and leaves its bytes as they were.
func refusedUnchanged(t *testing.T, path string, want Kind) error {
	t.Helper()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = CheckEncryptInPlace(context.Background(), path)
	if got := Classify(err).Kind; got != want {
		t.Fatalf("check of %s: %v (kind %s), want kind %s", path, err, got, want)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("the check changed the device")
	}
	return err
}

// An ext4 file system that fills its device is refused, naming the
// resize2fs command that makes room; once resize2fs shrank it by the
// 32 MiB, the check accepts it and reports its size. Neither check writes.
func TestCheckEncryptInPlaceShrink(t *testing.T) {
	testutil.RequireCommand(t, "mkfs.ext4", "e2fsprogs")
	img := image(t, 96)
	run(t, "mkfs.ext4", "-q", "-F", img)
	err := refusedUnchanged(t, img, KindFSTooLarge)
	var big *FSTooLargeError
	if !errors.As(err, &big) || big.TargetBlocks*big.BlockSize != 64<<20 || !strings.Contains(err.Error(), "resize2fs "+img+" 65536K") {
		t.Fatalf("refusal %v, want the resize2fs command to 64 MiB", err)
	}
	run(t, "e2fsck", "-f", "-y", img)
	run(t, "resize2fs", "-f", img, "65536K")
	// resize2fs truncates an image file; a partition keeps its size.
	if err := os.Truncate(img, 96<<20); err != nil {
		t.Fatal(err)
	}
	plan, err := CheckEncryptInPlace(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if plan.FS != "ext4" || plan.FSSize != 64<<20 || plan.DeviceSize != 96<<20 {
		t.Fatalf("plan %+v", plan)
	}
}

// A LUKS device, a device without a file system, and one too small for the
// header and the shift are each refused with their own kind, unchanged.
func TestCheckEncryptInPlaceRefusals(t *testing.T) {
	testutil.RequireCommand(t, "mkfs.ext4", "e2fsprogs")
	m := newTestManager(t)
	luks, _ := formatted(t, m, "enc1")
	if err := refusedUnchanged(t, luks, KindAlreadyLUKS); !strings.Contains(err.Error(), "atrest adopt") {
		t.Fatalf("%v", err)
	}
	if err := refusedUnchanged(t, image(t, 64), KindFSUnsupported); !strings.Contains(err.Error(), "found no signature") {
		t.Fatalf("%v", err)
	}
	small := image(t, 40)
	run(t, "mkfs.ext4", "-q", "-F", small)
	if _, err := CheckEncryptInPlace(context.Background(), small); !errors.Is(err, luks2.ErrDeviceTooSmall) || Classify(err).Kind != KindTooSmall {
		t.Fatalf("a 40 MiB device: %v", err)
	}
}

// A mounted file system is refused (blockdev's mount check), unchanged.
func TestCheckEncryptInPlaceMounted(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "mkfs.ext4", "e2fsprogs")
	d := looptest.Disk(t, 96)
	run(t, "mkfs.ext4", "-q", "-F", d.Path)
	mnt := t.TempDir()
	run(t, "mount", d.Path, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	_, err := CheckEncryptInPlace(context.Background(), d.Path)
	if !errors.Is(err, blockdev.ErrMounted) || Classify(err).Kind != KindInUse {
		t.Fatalf("a mounted device: %v", err)
	}
}
