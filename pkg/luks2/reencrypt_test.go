package luks2

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

// reencDataSize is the data area of the re-encryption tests: small, so that
// a crash test can stop at every write.
const reencDataSize = 64 << 10

const reencToken = `{"type":"atrest","keyslots":["0"],"kms":"local","ciphertext":"c"}`

// reencBase is a volume with platform keyslot 0 ("platform"), token 0 bound
// to it, and random plaintext written under the volume key.
func reencBase(t testing.TB) (*memDevice, *secret.Key, []byte) {
	t.Helper()
	dev := newMemDevice(DefaultDataOffset + reencDataSize)
	h, vk, err := New(FormatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vk.Wipe)
	u, _ := h.Begin()
	if _, err := u.AddKeyslot(vk, pass(t, "platform"), KeyslotOptions{Slot: 0, KDF: kdf.Platform()}); err != nil {
		t.Fatal(err)
	}
	if _, err := u.SetToken(0, []byte(reencToken)); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(context.Background(), dev); err != nil {
		t.Fatal(err)
	}
	plain := make([]byte, reencDataSize)
	rand.Read(plain)
	writePlain(t, dev, vk, plain)
	return dev, vk, plain
}

// writePlain and readPlain en- and decrypt the data area in userspace, as
// dm-crypt would with aes-xts-plain64 and 4096-byte sectors.
func writePlain(t testing.TB, dev Device, vk *secret.Key, plain []byte) {
	t.Helper()
	buf := bytes.Clone(plain)
	x, err := newXTS(vk.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for s := 0; s < len(buf); s += 4096 {
		x.crypt(buf[s:s+4096], uint64(s/512), true)
	}
	if _, err := dev.WriteAt(buf, DefaultDataOffset); err != nil {
		t.Fatal(err)
	}
}

func readPlain(t testing.TB, dev Reader, vk *secret.Key) []byte {
	t.Helper()
	size, _ := dev.Size()
	buf := make([]byte, size-DefaultDataOffset)
	if _, err := dev.ReadAt(buf, DefaultDataOffset); err != nil {
		t.Fatal(err)
	}
	x, err := newXTS(vk.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for s := 0; s < len(buf); s += 4096 {
		x.crypt(buf[s:s+4096], uint64(s/512), false)
	}
	return buf
}

// startReencrypt puts dev into re-encryption to a new key, with the
// platform secret re-enrolled and token 0 naming old and new keyslot.
func startReencrypt(t testing.TB, dev Device, oldVK *secret.Key) (*secret.Key, error) {
	t.Helper()
	h, err := Read(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	newVK, err := secret.Random(oldVK.Len())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(newVK.Wipe)
	u, err := h.BeginReencrypt(oldVK, newVK)
	if err != nil {
		t.Fatal(err)
	}
	id, err := u.AddKeyslot(newVK, pass(t, "platform"), KeyslotOptions{Slot: AnySlot, KDF: kdf.Platform()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.SetToken(0, []byte(strings.Replace(reencToken, `["0"]`, `["0","`+itoa(id)+`"]`, 1))); err != nil {
		t.Fatal(err)
	}
	_, err = u.CommitReencrypt(context.Background(), dev)
	return newVK, err
}

// resume continues the re-encryption on dev with the platform secret.
func resume(t testing.TB, dev Device, hotzone uint64) (*Header, error) {
	t.Helper()
	h, err := Read(context.Background(), dev)
	if err != nil {
		return nil, err
	}
	oldVK, newVK, err := h.OpenReencryptKeys(dev, pass(t, "platform"))
	if err != nil {
		return nil, err
	}
	defer oldVK.Wipe()
	defer newVK.Wipe()
	r, err := h.ResumeReencrypt(dev, oldVK, newVK)
	if err != nil {
		return nil, err
	}
	r.Hotzone = hotzone
	return r.Run(context.Background())
}

func TestReencryptOffline(t *testing.T) {
	dev, oldVK, plain := reencBase(t)
	newVK, err := startReencrypt(t, dev, oldVK)
	if err != nil {
		t.Fatal(err)
	}
	h, err := Read(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Open(dev, pass(t, "platform")); !errors.Is(err, ErrUnmetRequirements) {
		t.Fatalf("open during reencryption: %v, want the requirement refused", err)
	}
	if _, err := resume(t, dev, 16<<10); err != nil {
		t.Fatal(err)
	}
	h, err = Read(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	got, slot, err := h.Open(dev, pass(t, "platform"))
	if err != nil {
		t.Fatal(err)
	}
	defer got.Wipe()
	if !got.Equal(newVK) {
		t.Fatal("the platform secret does not open the new volume key")
	}
	if len(h.Keyslots) != 1 || len(h.Config.Requirements) != 0 || len(h.Segments) != 1 || len(h.Digests) != 1 {
		t.Fatalf("header after reencryption: %s", h.encodeJSON())
	}
	if tok := h.Tokens[0]; len(tok.Keyslots) != 1 || tok.Keyslots[0] != slot {
		t.Fatalf("token 0 names keyslots %v, want [%d]", tok.Keyslots, slot)
	}
	if !bytes.Equal(readPlain(t, dev, newVK), plain) {
		t.Fatal("plaintext changed")
	}
}

func TestReencryptRefusesWrongDigest(t *testing.T) {
	dev, oldVK, _ := reencBase(t)
	if _, err := startReencrypt(t, dev, oldVK); err != nil {
		t.Fatal(err)
	}
	h, _ := Read(context.Background(), dev)
	st, err := h.Reencryption()
	if err != nil {
		t.Fatal(err)
	}
	// Tamper with metadata the reencrypt digest covers: the backup-final
	// segment's IV offset (which would re-encrypt the data wrongly).
	h.segmentByFlag(flagBackupFinal).IVTweak = 8
	_ = st
	if _, _, err := h.OpenReencryptKeys(dev, pass(t, "platform")); !errors.Is(err, ErrReencryptDigest) {
		t.Fatalf("tampered backup segment: %v, want ErrReencryptDigest", err)
	}
}

// imageOf writes dev to a file for cryptsetup.
func imageOf(t testing.TB, dev *memDevice, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, dev.bytesOf(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func needCryptsetup(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		t.Skip("cryptsetup not installed")
	}
}

func cryptsetup(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("cryptsetup", append([]string{"--batch-mode"}, args...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// cryptsetupResume finishes the re-encryption of img with cryptsetup,
// offline, and returns the device as it left it.
func cryptsetupResume(t testing.TB, img string) (*memDevice, error) {
	t.Helper()
	keyFile := filepath.Join(filepath.Dir(img), "key")
	if err := os.WriteFile(keyFile, []byte("platform"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cryptsetup(t, "reencrypt", "--resume-only", "--force-offline-reencrypt", "--key-file", keyFile, img); err != nil {
		return nil, errors.New(strings.TrimSpace(out))
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return memFromBytes(b), nil
}

// TestReencryptCryptsetupResumesAtrest: a header atrest wrote in the middle
// of a re-encryption is accepted by cryptsetup luksDump, and cryptsetup
// reencrypt --resume-only finishes it, leaving the plaintext intact under
// the new key.
func TestReencryptCryptsetupResumesAtrest(t *testing.T) {
	needCryptsetup(t)
	dev, oldVK, plain := reencBase(t)
	newVK, err := startReencrypt(t, dev, oldVK)
	if err != nil {
		t.Fatal(err)
	}
	// Re-encrypt one 16 KiB hotzone, then stop.
	h, _ := Read(context.Background(), dev)
	o, n, err := h.OpenReencryptKeys(dev, pass(t, "platform"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := h.ResumeReencrypt(dev, o, n)
	if err != nil {
		t.Fatal(err)
	}
	r.Hotzone = 16 << 10
	ctx, cancel := context.WithCancel(context.Background())
	r.Progress = func(done, total uint64) { cancel() }
	if _, err := r.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v", err)
	}
	if st := r.State(); st.Done != 16<<10 {
		t.Fatalf("stopped after %d bytes", st.Done)
	}
	dir := t.TempDir()
	img := imageOf(t, dev, dir, "mid.img")
	if out, err := cryptsetup(t, "luksDump", img); err != nil || !strings.Contains(out, "online-reencrypt-v2") || !strings.Contains(out, "in-reencryption") && !strings.Contains(out, "backup-final") {
		t.Fatalf("luksDump: %v\n%s", err, out)
	}
	done, err := cryptsetupResume(t, img)
	if err != nil {
		t.Fatalf("cryptsetup reencrypt --resume-only: %v", err)
	}
	h, err = Read(context.Background(), done)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := h.Open(done, pass(t, "platform"))
	if err != nil {
		t.Fatal(err)
	}
	defer got.Wipe()
	if !got.Equal(newVK) || !bytes.Equal(readPlain(t, done, newVK), plain) {
		t.Fatal("after cryptsetup finished: wrong key or plaintext changed")
	}
}
