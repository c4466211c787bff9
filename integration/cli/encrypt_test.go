package cli

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/luks2/luks2test"
)

// fsOnDisk puts a 64 MiB ext4 file system (4 KiB blocks) with one random
// file on dev (96 MiB) and returns the file and the file system's bytes.
func fsOnDisk(t *testing.T, dev string) ([]byte, []byte) {
	t.Helper()
	testutil.RequireCommand(t, "mkfs.ext4", "e2fsprogs")
	file := make([]byte, 4<<20)
	rand.Read(file)
	src := filepath.Join(t.TempDir(), "data.bin")
	if err := os.WriteFile(src, file, 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "mkfs.ext4", "-q", "-F", "-b", "4096", dev, "64M")
	sh(t, "debugfs", "-w", "-R", "write "+src+" data.bin", dev)
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fs := make([]byte, 64<<20)
	if _, err := f.ReadAt(fs, 0); err != nil {
		t.Fatal(err)
	}
	return file, fs
}

// checkFS: the first 64 MiB of dev's data area decrypt under vk to fs; the
// decrypted image is clean for e2fsck and the file reads back.
func checkFS(t *testing.T, dev string, vk, file, fs []byte) {
	t.Helper()
	plain := dataXTSSize(t, dev, vk, nil, len(fs))
	if !bytes.Equal(plain, fs) {
		t.Fatal("the decrypted volume differs from the file system as it was")
	}
	if err := luks2test.CheckExtFS(plain, t.TempDir(), "data.bin", file); err != nil {
		t.Fatal(err)
	}
}

// atrest encrypt on a loop device, killed (the failpoint: exit 137) right
// after it started: atrest open refuses the volume with exit 21 naming the
// command; a copy of the state is finished by cryptsetup (repair and
// reencrypt --resume-only, with the platform secret), the original by the
// next atrest encrypt; both decrypt to the file system as it was, e2fsck
// clean, and the recovery key printed before the start opens the volume.
func TestEncryptInPlaceKilledResumes(t *testing.T) {
	n := localNode(t, "print")
	dev := disk(t, 96)
	file, fs := fsOnDisk(t, dev)
	n.env = []string{"ATREST_FAILPOINT=encrypt-after-start"}
	r := n.run(nil, "encrypt", dev, "--name", "inplace1")
	if r.code != 137 {
		t.Fatalf("the failpoint did not end the run: %s", r)
	}
	n.env = nil
	rec := recoveryKeyRE.FindString(r.stdout)
	if rec == "" {
		t.Fatalf("no recovery key printed before the start: %s", r)
	}
	if r := n.run(nil, "open", "inplace1"); r.code != 21 || !strings.Contains(r.stderr, "atrest encrypt "+dev+" --name inplace1") {
		t.Fatalf("open of a volume in encryption: %s", r)
	}

	cp := disk(t, 96)
	copyDevice(t, dev, cp)
	pf := keyFile(t, string(platformSecret(t, n, dev)))
	sh(t, "cryptsetup", "repair", "--batch-mode", "--key-file", pf, cp)
	if strings.Contains(sh(t, "cryptsetup", "luksDump", cp), "online-reencrypt") {
		sh(t, "cryptsetup", "reencrypt", "--resume-only", "--batch-mode", "--key-file", pf, cp)
	}
	checkFS(t, cp, volumeKeyOfFile(t, cp, pf), file, fs)
	zero(t, cp, 16<<20)

	if out := n.ok("encrypt", dev, "--name", "inplace1").stdout; !strings.Contains(out, "resumed an encryption in place") {
		t.Fatalf("the second run did not resume: %s", out)
	}
	n.ok("status", "inplace1")
	if !cryptsetupAccepts(t, dev, rec) {
		t.Fatal("the recovery key does not open the volume")
	}
	checkFS(t, dev, volumeKeyOf(t, dev, rec), file, fs)
	if err := exec.Command("cryptsetup", "isLuks", dev).Run(); err != nil {
		t.Fatal("not a LUKS device")
	}
}
