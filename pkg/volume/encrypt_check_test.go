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

// A btrfs or an XFS that fills its device is refused with what makes room
// for its type (btrfs filesystem resize to the size that fits; for XFS,
// which cannot shrink, a device grown by 32 MiB, after which the check
// accepts it); a btrfs of two devices and an XFS with an external log are
// refused as unsupported (a part would stay plaintext). None is changed.
func TestCheckEncryptInPlaceBtrfsAndXFS(t *testing.T) {
	testutil.RequireCommand(t, "mkfs.btrfs", "btrfs-progs")
	testutil.RequireCommand(t, "mkfs.xfs", "xfsprogs")
	full := image(t, 96)
	run(t, "mkfs.btrfs", "-q", "-f", "--mixed", full)
	if err := refusedUnchanged(t, full, KindFSTooLarge); !strings.Contains(err.Error(), "the btrfs is 100663296 bytes") || !strings.Contains(err.Error(), "btrfs filesystem resize 65536K /mnt") {
		t.Fatalf("a full btrfs: %v", err)
	}
	two := image(t, 96)
	run(t, "mkfs.btrfs", "-q", "-f", "--mixed", "-b", "64M", two, image(t, 96))
	if err := refusedUnchanged(t, two, KindFSUnsupported); !strings.Contains(err.Error(), "a btrfs of 2 devices") {
		t.Fatalf("a btrfs of two devices: %v", err)
	}

	xfs := image(t, 96)
	run(t, "mkfs.xfs", "-q", "-f", "--unsupported", xfs)
	if err := refusedUnchanged(t, xfs, KindFSTooLarge); !strings.Contains(err.Error(), "XFS cannot shrink") || !strings.Contains(err.Error(), "at least 134217728 bytes") || !strings.Contains(err.Error(), "lvextend -L +32M") {
		t.Fatalf("a full XFS: %v", err)
	}
	if err := os.Truncate(xfs, 128<<20); err != nil {
		t.Fatal(err)
	}
	if plan, err := CheckEncryptInPlace(context.Background(), xfs); err != nil || plan.FS != "xfs" || plan.FSSize != 96<<20 {
		t.Fatalf("the XFS on a device grown by 32 MiB: %+v, %v", plan, err)
	}
	logged := image(t, 96)
	run(t, "mkfs.xfs", "-q", "-f", "--unsupported", "-d", "size=64m", "-l", "logdev="+image(t, 16)+",size=8m", logged)
	if err := refusedUnchanged(t, logged, KindFSUnsupported); !strings.Contains(err.Error(), "external log") {
		t.Fatalf("an XFS with an external log: %v", err)
	}
}
