package volume

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/luks2/luks2test"
	"github.com/atrest/atrest/pkg/secret"
)

// plainFS is an image of 96 MiB holding a 64 MiB ext4 file system (4 KiB
// blocks) with one file of random bytes; it returns the image, the file
// and the file system's bytes.
func plainFS(t *testing.T) (string, []byte, []byte) {
	t.Helper()
	testutil.RequireCommand(t, "mkfs.ext4", "e2fsprogs")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	file := make([]byte, 5<<20)
	rand.Read(file)
	src := filepath.Join(dir, "data.bin")
	if err := os.WriteFile(src, file, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", img, "64M")
	run(t, "debugfs", "-w", "-R", "write "+src+" data.bin", img)
	if err := os.Truncate(img, 96<<20); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return img, file, raw[:64<<20]
}

// checkEncryptedVolume: the volume opens through the KMS (status healthy),
// its data area decrypts (x/crypto/xts) to the file system as it was,
// e2fsck finds it clean, the file reads back, and the recovery key opens.
func checkEncryptedVolume(t *testing.T, m *Manager, img string, file, fs []byte, rec *secret.Key) {
	t.Helper()
	checkEncryptedFS(t, m, img, "ext4", file, fs, rec)
}

// checkEncryptedFS is checkEncryptedVolume for a file system of type typ
// (luks2test.CheckFS).
func checkEncryptedFS(t *testing.T, m *Manager, img, typ string, file, fs []byte, rec *secret.Key) {
	t.Helper()
	if ps := problems(t, m, img); len(ps) > 0 {
		t.Fatalf("status: %v", ps)
	}
	v := find(t, m, img)
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := luks2test.DataXTS(volumeKey(t, m, v).Bytes(), raw[16<<20:16<<20+len(fs)], 4096, false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, fs) {
		t.Fatal("the decrypted volume differs from the file system as it was")
	}
	if err := luks2test.CheckFS(typ, plain, t.TempDir(), "data.bin", file); err != nil {
		t.Fatal(err)
	}
	if !recoveryOpens(t, v, rec) {
		t.Fatal("the recovery key does not open the volume")
	}
}

// atrest encrypt turns a shrunk ext4 file system into an atrest volume
// in place: platform keyslot through the KMS, recovery key shown before
// anything was written, header backup; the file system is intact.
func TestEncrypt(t *testing.T) {
	m := withRecovery(newTestManager(t), config.RecoveryPrint)
	img, file, fs := plainFS(t)
	var rec *secret.Key
	var progress []uint64
	res, err := m.Encrypt(context.Background(), EncryptOptions{Device: img, Name: "enc1",
		Show: func(r *EncryptResult) error {
			if r.Recovery.Keyslot < 0 {
				t.Error("the recovery key is shown before its keyslot is planned")
			}
			rec = keyCopy(t, r.Recovery.Key)
			return nil
		},
		Progress: func(done, total uint64) { progress = append(progress, done) }})
	if err != nil {
		t.Fatal(err)
	}
	res.Recovery.Wipe()
	if res.Resumed || res.Bytes != 64<<20 || res.Backup == "" || len(progress) != 1+4 {
		t.Fatalf("result %+v, progress %v", res, progress)
	}
	checkEncryptedVolume(t, m, img, file, fs, rec)
}

// otherFS is plainFS for btrfs (mixed block groups: btrfs needs 109 MiB
// without) or XFS (below the 300 MB mkfs.xfs supports, for the test):
// a 64 MiB file system with one file of random bytes in a 96 MiB image.
func otherFS(t *testing.T, typ string) (string, []byte, []byte) {
	t.Helper()
	dir, img := t.TempDir(), image(t, 96)
	file := make([]byte, 3<<20)
	rand.Read(file)
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "data.bin"), file, 0o600); err != nil {
		t.Fatal(err)
	}
	switch typ {
	case "btrfs":
		testutil.RequireCommand(t, "mkfs.btrfs", "btrfs-progs")
		run(t, "mkfs.btrfs", "-q", "-f", "--mixed", "-b", "64M", "--rootdir", root, img)
	case "xfs":
		testutil.RequireCommand(t, "mkfs.xfs", "xfsprogs")
		proto := filepath.Join(dir, "proto")
		if err := os.WriteFile(proto, []byte("/dev/null\n0 0\nd--755 0 0\ndata.bin ---600 0 0 "+filepath.Join(root, "data.bin")+"\n$\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, "mkfs.xfs", "-q", "-f", "--unsupported", "-d", "size=64m", "-p", proto, img)
	}
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return img, file, raw[:64<<20]
}

// A btrfs and an XFS that end 32 MiB before their device are encrypted in
// place like an ext4: the data decrypts to the file system byte for byte,
// which btrfs check and xfs_repair find clean (btrfs restore reads the file
// back), and the recovery key opens.
func TestEncryptBtrfsAndXFS(t *testing.T) {
	for _, typ := range []string{"btrfs", "xfs"} {
		t.Run(typ, func(t *testing.T) {
			m := withRecovery(newTestManager(t), config.RecoveryPrint)
			img, file, fs := otherFS(t, typ)
			var rec *secret.Key
			res, err := m.Encrypt(context.Background(), EncryptOptions{Device: img, Name: "enc" + typ,
				Show: func(r *EncryptResult) error { rec = keyCopy(t, r.Recovery.Key); return nil }})
			if err != nil {
				t.Fatal(err)
			}
			res.Recovery.Wipe()
			if res.Bytes != 64<<20 {
				t.Fatalf("result %+v", res)
			}
			checkEncryptedFS(t, m, img, typ, file, fs, rec)
		})
	}
}

// Killed right after it started, the volume is refused by open (the
// progress and the command that finishes it), and the next atrest encrypt
// resumes it to the same result.
func TestEncryptInterruptedResumes(t *testing.T) {
	m := withRecovery(newTestManager(t), config.RecoveryPrint)
	img, file, fs := plainFS(t)
	var rec *secret.Key
	armFailpoint(t, "encrypt-after-start")
	if !crashed(func() {
		_, _ = m.Encrypt(context.Background(), EncryptOptions{Device: img, Name: "enc2",
			Show: func(r *EncryptResult) error { rec = keyCopy(t, r.Recovery.Key); return nil }})
	}) {
		t.Fatal("the failpoint was not reached")
	}
	failpoint = func(string) {}
	res := m.Open(context.Background(), []*Volume{find(t, m, img)}, OpenOptions{})
	var re *ReencryptingError
	if !errors.As(res[0].Err, &re) || !strings.Contains(res[0].Err.Error(), "run atrest encrypt "+img+" --name enc2") {
		t.Fatalf("open of a volume in encryption: %v", res[0].Err)
	}
	r, err := m.Encrypt(context.Background(), EncryptOptions{Device: img, Name: "enc2"})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Resumed || r.Bytes != 64<<20 {
		t.Fatalf("result %+v", r)
	}
	checkEncryptedVolume(t, m, img, file, fs, rec)
}

// A file system that fills its device is refused before the KMS is asked
// or anything is written, naming resize2fs.
func TestEncryptRefusesUnshrunk(t *testing.T) {
	m := newTestManager(t)
	testutil.RequireCommand(t, "mkfs.ext4", "e2fsprogs")
	img := image(t, 96)
	run(t, "mkfs.ext4", "-q", "-F", img)
	before, _ := os.ReadFile(img)
	_, err := m.Encrypt(context.Background(), EncryptOptions{Device: img, Name: "enc3"})
	if Classify(err).Kind != KindFSTooLarge || !strings.Contains(err.Error(), "resize2fs") {
		t.Fatalf("%v", err)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Fatal("the refused encrypt changed the device")
	}
}
