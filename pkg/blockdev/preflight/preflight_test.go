package preflight_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/blockdev/internal/devtest"
	"github.com/atrest/atrest/pkg/blockdev/overwrite"
	"github.com/atrest/atrest/pkg/blockdev/preflight"
	"github.com/atrest/atrest/pkg/loop"
)

const mib = 1 << 20

func TestBlankDevicePasses(t *testing.T) {
	dev := devtest.Loop(t, 32*mib)
	res, err := preflight.Run(context.Background(), dev.Path, preflight.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Wiped) != 0 || res.NonZero != nil || res.Device.Size != 32*mib {
		t.Fatalf("result %+v", res)
	}
	// The device stays claimed for the format that follows.
	if _, err := preflight.Run(context.Background(), dev.Path, preflight.Options{}); !errors.Is(err, blockdev.ErrBusy) {
		t.Fatalf("second preflight while the first holds the device: %v, want ErrBusy", err)
	}
	if _, err := res.Handle.File.WriteAt([]byte("LUKS"), 0); err != nil {
		t.Fatalf("cannot write through the handle: %v", err)
	}
	if err := res.Handle.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSignatureRefusedAndDeviceUntouched(t *testing.T) {
	dev := devtest.Loop(t, 32*mib)
	devtest.Run(t, "mkfs.ext4", "-q", "-F", dev.Path)
	uuid := strings.TrimSpace(devtest.Run(t, "blkid", "-p", "-s", "UUID", "-o", "value", dev.Path))
	sum := testutil.SHA256(t, dev.Path)

	_, err := preflight.Run(context.Background(), dev.Path, preflight.Options{})
	var se *preflight.SignaturesError
	if !errors.As(err, &se) || !errors.Is(err, preflight.ErrSignatures) {
		t.Fatalf("got %v, want a SignaturesError", err)
	}
	want := dev.Path + " already holds ext4 version 1.0 (UUID " + uuid + ") at 0x438"
	if err.Error() != want {
		t.Fatalf("message %q\nwant    %q", err, want)
	}
	if testutil.SHA256(t, dev.Path) != sum {
		t.Fatal("a refused preflight changed the device")
	}
	// Refusing released the device.
	res, err := preflight.Run(context.Background(), dev.Path, preflight.Options{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	res.Handle.Close()
}

func TestForceWipesAPartitionedDisk(t *testing.T) {
	dev := devtest.Loop(t, 64*mib)
	devtest.Run(t, "sgdisk", "-o", "-n", "1:0:+8M", "-n", "2:0:+8M", dev.Path)
	p1 := devtest.AddPartition(t, dev.Path, 1, 1*mib, 8*mib)
	devtest.AddPartition(t, dev.Path, 2, 9*mib, 8*mib)
	devtest.Run(t, "mkfs.ext4", "-q", "-F", p1) // data inside, not mounted
	before := devtest.CopySparse(t, dev.Path)

	var last overwrite.Progress
	res, err := preflight.Run(context.Background(), dev.Path, preflight.Options{
		Force:    true,
		Progress: func(p overwrite.Progress) { last = p },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Handle.Close()
	// Run itself writes nothing, also with Force: the format asks its KMS
	// between Run and Wipe, and a KMS that fails leaves the disk as it was.
	if len(res.Found) != 2 || len(res.Wiped) != 0 || testutil.SHA256(t, dev.Path) != testutil.SHA256(t, before) {
		t.Fatalf("Run with Force wrote to the device or found %v", res.Found)
	}
	if err := res.Wipe(context.Background()); err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, s := range res.Wiped {
		types = append(types, s.Type)
	}
	if strings.Join(types, ",") != "gpt,PMBR" || len(res.Warnings) != 0 {
		t.Fatalf("wiped %v (warnings %v), want the GPT and its protective MBR", res.Wiped, res.Warnings)
	}
	// 8 + 8 bytes of "EFI PART" and the 2-byte boot signature.
	if last.Done != 18 || last.Total != 18 {
		t.Fatalf("last progress %+v, want 18 of 18 bytes", last)
	}
	// The kernel re-read the wiped table: the partitions are gone.
	if _, err := os.Stat(filepath.Join("/sys/class/block", filepath.Base(p1))); err == nil {
		t.Fatalf("%s still exists after its partition table was wiped", p1)
	}
	if out, err := devtest.RunStatus(t, "blkid", "-p", dev.Path); devtest.ExitCode(err) != 2 {
		t.Fatalf("blkid -p after --force: %v\n%s", err, out)
	}
	devtest.Diff(t, before, dev.Path, 100, func(off int64, x, y byte) {
		if !devtest.InMagic(res.Wiped, off) {
			t.Errorf("offset %#x changed outside the wiped magics", off)
		}
	})
}

func TestNonZeroDataWithoutSignature(t *testing.T) {
	img := devtest.Image(t, 32*mib)
	noise := make([]byte, 4096)
	if _, err := rand.Read(noise); err != nil {
		t.Fatal(err)
	}
	clear(noise[0x1fe:0x200]) // no accidental boot signature
	devtest.WriteAt(t, img, noise, 1*mib-4096)
	dev := devtest.Attach(t, img, loop.Options{})
	sum := testutil.SHA256(t, dev.Path)

	_, err := preflight.Run(context.Background(), dev.Path, preflight.Options{})
	var nz *preflight.NonZeroError
	if !errors.As(err, &nz) || !errors.Is(err, preflight.ErrNonZero) || nz.NonZero.Offset < 1*mib-4096 {
		t.Fatalf("got %v, want a NonZeroError in the last 4 KiB of the first MiB", err)
	}
	if testutil.SHA256(t, dev.Path) != sum {
		t.Fatal("a refused preflight changed the device")
	}
	for _, opts := range []preflight.Options{{NonZero: preflight.AllowNonZero}, {Force: true}} {
		res, err := preflight.Run(context.Background(), dev.Path, opts)
		if err != nil {
			t.Fatalf("%+v: %v", opts, err)
		}
		if res.NonZero == nil || len(res.Wiped) != 0 {
			t.Fatalf("%+v: result %+v, want the finding reported and nothing wiped", opts, res)
		}
		res.Handle.Close()
	}
	if testutil.SHA256(t, dev.Path) != sum {
		t.Fatal("data with no signature was changed; there was nothing to wipe")
	}
}

func TestForceNeverOverridesInUse(t *testing.T) {
	dev := devtest.Loop(t, 32*mib)
	devtest.Run(t, "mkfs.ext4", "-q", "-F", dev.Path)
	dir := devtest.MountReadOnly(t, dev.Path, "ext4")
	sum := testutil.SHA256(t, dev.Path)
	_, err := preflight.Run(context.Background(), dev.Path, preflight.Options{Force: true})
	if !errors.Is(err, blockdev.ErrMounted) || !strings.Contains(err.Error(), "mounted on "+dir) {
		t.Fatalf("got %v, want the mount refused", err)
	}
	if testutil.SHA256(t, dev.Path) != sum {
		t.Fatal("--force changed a mounted device")
	}
}

func TestImageFileWithLUKS2(t *testing.T) {
	testutil.RequireRoot(t)
	img := devtest.Image(t, 32*mib)
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	devtest.Run(t, "cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--key-file", key, img)
	_, err := preflight.Run(context.Background(), img, preflight.Options{})
	if !errors.Is(err, preflight.ErrSignatures) || !strings.Contains(err.Error(), "crypto_LUKS version 2") ||
		!strings.Contains(err.Error(), "0x4000 (secondary header)") {
		t.Fatalf("got %v, want both LUKS2 headers named", err)
	}
	res, err := preflight.Run(context.Background(), img, preflight.Options{Force: true})
	if err == nil {
		err = res.Wipe(context.Background())
		res.Handle.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	if out, err := devtest.RunStatus(t, "cryptsetup", "isLuks", img); err == nil {
		t.Fatalf("cryptsetup still sees LUKS after --force:\n%s", out)
	}
}

func TestMissingAndUnsupported(t *testing.T) {
	if _, err := preflight.Run(context.Background(), "/nonexistent/disk", preflight.Options{}); !errors.Is(err, blockdev.ErrNotFound) {
		t.Fatalf("missing device: %v", err)
	}
	if _, err := preflight.Run(context.Background(), "/dev/null", preflight.Options{}); !errors.Is(err, blockdev.ErrUnsupported) {
		t.Fatalf("character device: %v", err)
	}
}

// A device smaller than the format needs is refused before it is opened,
// with its size and the minimum in the message; nothing is written.
func TestTooSmall(t *testing.T) {
	for _, size := range []int64{1 * mib, 16 * mib} {
		img := devtest.Image(t, size)
		sum := testutil.SHA256(t, img)
		_, err := preflight.Run(context.Background(), img, preflight.Options{Force: true, MinSize: 16*mib + 4096})
		var te *preflight.TooSmallError
		if !errors.As(err, &te) || !errors.Is(err, preflight.ErrTooSmall) || te.Size != size ||
			!strings.Contains(err.Error(), "is too small") {
			t.Fatalf("%d MiB device: %v, want a TooSmallError", size/mib, err)
		}
		if testutil.SHA256(t, img) != sum {
			t.Fatal("a refused preflight changed the device")
		}
	}
}
