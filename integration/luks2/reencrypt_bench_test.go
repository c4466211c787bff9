package luks2

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

// reencBenchData is the data area of BenchmarkReencrypt1GiB.
const reencBenchData = 1 << 30

// BenchmarkReencrypt1GiB re-encrypts the 1 GiB data area of a loop device
// offline, with atrest (pkg/luks2's Reencryptor: BeginReencrypt, then Run
// with the default hotzone) and then with `cryptsetup reencrypt` (its
// default checksum resilience) on the same device, in the same run. Each
// iteration is one whole re-encryption; MB/s is of the data area. The
// backing file lies in ATREST_BENCH_DIR (default: the test's temporary
// directory, on disk).
// scripts/bench-reencrypt.sh prints the comparison. Not part of make test
// (it needs -bench and a GiB of disk).
func BenchmarkReencrypt1GiB(b *testing.B) {
	requireTier(b)
	// ATREST_BENCH_DIR=/dev/shm puts the backing file in memory: the
	// figures are then the tools' own, not the disk's.
	dir := os.Getenv("ATREST_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	path := loopDeviceIn(b, dir, luks2.DefaultDataOffset+reencBenchData)
	vk := formatPlatformOnly(b, path)
	kf := keyFile(b, platformPass)
	b.Run("atrest", func(b *testing.B) {
		b.SetBytes(reencBenchData)
		medianMS(b, func() {
			next := reencryptOnce(b, path, vk)
			vk.Wipe()
			vk = next
		})
	})
	b.Run("cryptsetup", func(b *testing.B) {
		b.SetBytes(reencBenchData)
		medianMS(b, func() {
			cmd := exec.Command("cryptsetup", "reencrypt", "--batch-mode", "--key-file", kf,
				"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--resilience", "checksum", path)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		})
	})
}

// formatPlatformOnly formats path with the platform keyslot alone (so that
// cryptsetup reencrypt needs one passphrase) and writes the data area
// once, so that no run reads sparse holes; it returns the volume key.
func formatPlatformOnly(b *testing.B, path string) *secret.Key {
	b.Helper()
	dev := openDev(b, path)
	h, vk, err := luks2.New(luks2.FormatOptions{})
	if err != nil {
		b.Fatal(err)
	}
	u, _ := h.Begin()
	if _, err := u.AddKeyslot(vk, key(b, platformPass), luks2.KeyslotOptions{Slot: 0, KDF: kdf.Platform()}); err != nil {
		b.Fatal(err)
	}
	if _, err := u.SetToken(0, []byte(atrestToken)); err != nil {
		b.Fatal(err)
	}
	if _, err := u.Commit(ctx(b), dev); err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<20)
	for off := int64(0); off < reencBenchData; off += int64(len(chunk)) {
		if _, err := f.WriteAt(chunk, luks2.DefaultDataOffset+off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return vk
}

// reencryptOnce re-encrypts path from vk to a new key, the platform secret
// re-enrolled, and returns the new key.
func reencryptOnce(b *testing.B, path string, vk *secret.Key) *secret.Key {
	b.Helper()
	dev := openDev(b, path)
	newVK, err := secret.Random(vk.Len())
	if err != nil {
		b.Fatal(err)
	}
	u, err := read(b, dev).BeginReencrypt(vk, newVK)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := u.AddKeyslot(newVK, key(b, platformPass), luks2.KeyslotOptions{Slot: luks2.AnySlot, KDF: kdf.Platform()}); err != nil {
		b.Fatal(err)
	}
	if _, err := u.CommitReencrypt(ctx(b), dev); err != nil {
		b.Fatal(err)
	}
	r, err := read(b, dev).ResumeReencrypt(dev, vk, newVK)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	r.ReadAhead = true // as pkg/volume's offline run
	start := time.Now()
	if _, err := r.Run(ctx(b)); err != nil {
		b.Fatal(err)
	}
	b.Logf("atrest: %d bytes in %s", r.Size(), time.Since(start).Round(time.Millisecond))
	return newVK
}
