package volume

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/config"
)

// atrest and cryptsetup take turns under cryptsetup's re-encryption lock
// (/run/cryptsetup/LN_LUKS2-reencryption-<uuid>): while atrest holds it,
// cryptsetup reencrypt --resume-only on a loop device over the volume
// refuses, the image byte-identical; while another process holds it (as
// cryptsetup does during its run), atrest reencrypt refuses with the
// locked kind, byte-identical; once it is free, cryptsetup finishes the
// run atrest started and the lock file is gone.
func TestReencryptionLockExcludesCryptsetup(t *testing.T) {
	testutil.RequireRoot(t)
	cs := testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	losetup := testutil.RequireCommand(t, "losetup", "mount")
	m, img, v, _ := reencryptSetup(t)
	killedAfterStart(t, m, v)
	v = find(t, m, img)
	kf := platformKeyFile(t, m, v)
	out, err := exec.Command(losetup, "--find", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "-d", loop).Run() })
	resume := exec.Command(cs, "--batch-mode", "reencrypt", "--resume-only", "--force-offline-reencrypt", "--key-file", kf, loop)
	sum := imageSum(t, img)

	release, err := lockReencryption(v.UUID())
	if err != nil {
		t.Fatal(err)
	}
	if out, err := resume.CombinedOutput(); err == nil {
		release()
		t.Fatalf("cryptsetup resumed while atrest held the lock:\n%s", out)
	} else {
		t.Logf("cryptsetup while atrest holds the lock: %v: %s", err, strings.TrimSpace(string(out)))
	}
	release()
	if imageSum(t, img) != sum {
		t.Fatal("cryptsetup's refusal changed the image")
	}
	lock := filepath.Join(cryptsetupLockDir, "LN_LUKS2-reencryption-"+v.UUID())
	if _, err := os.Stat(lock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("atrest's released lock file: %v, want it removed", err)
	}

	_, holderRelease := holdLock(t, v.UUID())
	_, err = m.Reencrypt(t.Context(), find(t, m, img), ReencryptOptions{})
	if !errors.Is(err, ErrReencryptionLocked) || Classify(err).Kind != KindLocked || !strings.Contains(err.Error(), lock) {
		t.Fatalf("reencrypt while another process holds the lock: %v (kind %s), want kind locked naming %s", err, Classify(err).Kind, lock)
	}
	if imageSum(t, img) != sum {
		t.Fatal("atrest's refusal changed the image")
	}
	holderRelease()

	if out, err := exec.Command(cs, "--batch-mode", "reencrypt", "--resume-only", "--force-offline-reencrypt", "--key-file", kf, loop).CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup with the lock free: %v\n%s", err, out)
	}
	if st, _ := find(t, m, img).Header.Reencryption(); st != nil {
		t.Fatal("cryptsetup did not finish the re-encryption")
	}
}

// holdLock takes cryptsetup's re-encryption lock of uuid on an open file
// of its own, as cryptsetup holds it during its run (flock locks belong
// to the open file, so it conflicts with atrest's in this process too).
func holdLock(t *testing.T, uuid string) (path string, release func()) {
	t.Helper()
	path = filepath.Join(cryptsetupLockDir, "LN_LUKS2-reencryption-"+uuid)
	fd, err := unix.Open(path, unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	return path, func() { unix.Unlink(path); unix.Close(fd) }
}

// An encryption in place holds the lock too: while another process holds
// it, the resume of an interrupted atrest encrypt is refused with the
// locked kind, the device byte-identical; once it is free, it resumes.
func TestEncryptHoldsReencryptionLock(t *testing.T) {
	testutil.RequireRoot(t)
	m := withRecovery(newTestManager(t), config.RecoveryNone)
	img, _, _ := plainFS(t)
	armFailpoint(t, "encrypt-after-start")
	if !crashed(func() { _, _ = m.Encrypt(t.Context(), EncryptOptions{Device: img, Name: "enc3"}) }) {
		t.Fatal("the failpoint was not reached")
	}
	failpoint = func(string) {}
	lock, release := holdLock(t, find(t, m, img).UUID())
	sum := imageSum(t, img)
	_, err := m.Encrypt(t.Context(), EncryptOptions{Device: img, Name: "enc3"})
	release()
	if !errors.Is(err, ErrReencryptionLocked) || Classify(err).Kind != KindLocked || !strings.Contains(err.Error(), lock) {
		t.Fatalf("encrypt while another process holds the lock: %v (kind %s)", err, Classify(err).Kind)
	}
	if imageSum(t, img) != sum {
		t.Fatal("the refused encrypt changed the device")
	}
	if r, err := m.Encrypt(t.Context(), EncryptOptions{Device: img, Name: "enc3"}); err != nil || !r.Resumed {
		t.Fatalf("encrypt with the lock free: %+v, %v", r, err)
	}
}
