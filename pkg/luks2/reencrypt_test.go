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
	"time"

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
	x, err := newXTS(vk.Bytes(), nil)
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
	x, err := newXTS(vk.Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for s := 0; s < len(buf); s += 4096 {
		x.crypt(buf[s:s+4096], uint64(s/512), false)
	}
	return buf
}

// beginReencrypt starts an Update of dev's header into re-encryption from
// oldVK to a new random key, which it returns.
func beginReencrypt(t testing.TB, dev Device, oldVK *secret.Key) (*Update, *secret.Key) {
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
	return u, newVK
}

// startReencrypt puts dev into re-encryption to a new key, with the
// platform secret re-enrolled and token 0 naming old and new keyslot.
func startReencrypt(t testing.TB, dev Device, oldVK *secret.Key) (*secret.Key, error) {
	t.Helper()
	u, newVK := beginReencrypt(t, dev, oldVK)
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
	return resumeWith(t, dev, hotzone, true, "platform")
}

// resumeWith continues the re-encryption on dev with the passphrases;
// with rebind the token of the old keyslot moves to the new one.
func resumeWith(t testing.TB, dev Device, hotzone uint64, rebind bool, passes ...string) (*Header, error) {
	t.Helper()
	h, err := Read(context.Background(), dev)
	if err != nil {
		return nil, err
	}
	var ps []*secret.Key
	for _, p := range passes {
		ps = append(ps, pass(t, p))
	}
	keys, err := h.OpenReencryptKeys(dev, ps...)
	if err != nil {
		return nil, err
	}
	defer keys.Wipe()
	r, err := h.ResumeReencrypt(dev, keys.Old, keys.New)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	r.Hotzone, r.ReadAhead = hotzone, true
	if rebind {
		r.Rebind = map[int]int{keys.OldSlot: keys.NewSlot}
	}
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
	h, got, slot := finished(t, dev)
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
	if _, err := h.OpenReencryptKeys(dev, pass(t, "platform")); !errors.Is(err, ErrReencryptDigest) {
		t.Fatalf("tampered backup segment: %v, want ErrReencryptDigest", err)
	}
}

// finished reads dev after a re-encryption: not in re-encryption any
// more, opened by the platform secret. It returns the header, the key
// (wiped at cleanup) and its keyslot.
func finished(t testing.TB, dev Reader) (*Header, *secret.Key, int) {
	t.Helper()
	h, err := Read(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := h.Reencryption(); st != nil || len(h.Config.Requirements) > 0 {
		t.Fatalf("still in re-encryption: %s", h.encodeJSON())
	}
	vk, slot, err := h.Open(dev, pass(t, "platform"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vk.Wipe)
	return h, vk, slot
}

// imageOf writes dev to a file for cryptsetup.
func imageOf(t testing.TB, dev *memDevice, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Sparse: only the pages the device holds.
	if err := f.Truncate(dev.size); err != nil {
		t.Fatal(err)
	}
	for off, page := range dev.pages {
		if _, err := f.WriteAt(page[:], off*memPage); err != nil {
			t.Fatal(err)
		}
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
	return cryptsetupResumeWith(t, img, "platform")
}

// cryptsetupResumeWith is cryptsetupResume with passphrase pw.
func cryptsetupResumeWith(t testing.TB, img, pw string) (*memDevice, error) {
	t.Helper()
	keyFile := filepath.Join(filepath.Dir(img), "key")
	if err := os.WriteFile(keyFile, []byte(pw), 0o600); err != nil {
		t.Fatal(err)
	}
	// A run cut short in a hotzone needs recovery first, which cryptsetup
	// does on repair (or open).
	if out, err := cryptsetup(t, "repair", "--key-file", keyFile, img); err != nil {
		return nil, errors.New(strings.TrimSpace(out))
	}
	// Recovery of the last hotzone ends the re-encryption.
	if out, _ := cryptsetup(t, "luksDump", img); strings.Contains(out, "online-reencrypt") {
		if out, err := cryptsetup(t, "reencrypt", "--resume-only", "--force-offline-reencrypt", "--key-file", keyFile, img); err != nil {
			return nil, errors.New(strings.TrimSpace(out))
		}
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
	keys, err := h.OpenReencryptKeys(dev, pass(t, "platform"))
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Wipe()
	r, err := h.ResumeReencrypt(dev, keys.Old, keys.New)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Hotzone = 16 << 10
	ctx, cancel := context.WithCancel(context.Background())
	r.Progress = func(done, total uint64) {
		if done > 0 {
			cancel()
		}
	}
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
	_, got, _ := finished(t, done)
	if !got.Equal(newVK) || !bytes.Equal(readPlain(t, done, newVK), plain) {
		t.Fatal("after cryptsetup finished: wrong key or plaintext changed")
	}
}

// cryptsetupStarted makes an image with cryptsetup (passphrase
// "platform"), writes plaintext under its key and starts a re-encryption
// with cryptsetup reencrypt --init-only; with poll set, cryptsetup then
// runs in 1 MiB hotzones and is killed (SIGKILL) as soon as the header,
// read every poll, shows progress.
func cryptsetupStarted(t *testing.T, dataSize int64, poll time.Duration) (string, []byte) {
	needCryptsetup(t)
	dir := t.TempDir()
	img, keyFile := filepath.Join(dir, "cs.img"), filepath.Join(dir, "key")
	os.WriteFile(keyFile, []byte("platform"), 0o600)
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, DefaultDataOffset+dataSize)
	if out, err := cryptsetup(t, "luksFormat", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", keyFile, img); err != nil {
		t.Fatalf("luksFormat: %v\n%s", err, out)
	}
	dev, err := OpenFile(img, true)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	h, err := Read(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	vk, _, err := h.Open(dev, pass(t, "platform"))
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	plain := make([]byte, dataSize)
	rand.Read(plain)
	writePlain(t, dev, vk, plain)
	if out, err := cryptsetup(t, "reencrypt", "--init-only", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", keyFile, img); err != nil {
		t.Fatalf("reencrypt --init-only: %v\n%s", err, out)
	}
	if poll > 0 {
		cmd := exec.Command("cryptsetup", "--batch-mode", "reencrypt", "--resume-only", "--force-offline-reencrypt", "--hotzone-size", "1M", "--key-file", keyFile, img)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill it once a header shows progress.
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(poll) {
			if h, err := Read(context.Background(), dev); err == nil {
				if st, _ := h.Reencryption(); st != nil && (st.Done > 0 || st.Hotzone > 0) {
					break
				}
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
	return img, plain
}

// TestReencryptAtrestResumesCryptsetup: atrest reads the metadata
// cryptsetup writes (its reencrypt digest included) and finishes a
// re-encryption cryptsetup started, or was killed in the middle of; the
// plaintext is intact under the new key and cryptsetup opens the result.
func TestReencryptAtrestResumesCryptsetup(t *testing.T) {
	for _, c := range []struct {
		name string
		size int64
		poll time.Duration
	}{{"init-only", 1 << 20, 0}, {"killed", 48 << 20, 5 * time.Millisecond}} {
		t.Run(c.name, func(t *testing.T) {
			img, plain := cryptsetupStarted(t, c.size, c.poll)
			dev, err := OpenFile(img, true)
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			h, err := Read(context.Background(), dev)
			if err != nil {
				t.Fatal(err)
			}
			st, err := h.Reencryption()
			if err != nil || st == nil {
				t.Fatalf("state cryptsetup left: %v %v", st, err)
			}
			t.Logf("cryptsetup left %d of %d bytes done, hotzone %d", st.Done, c.size, st.Hotzone)
			if _, err := resume(t, dev, 0); err != nil {
				t.Fatal(err)
			}
			_, vk, _ := finished(t, dev)
			if !bytes.Equal(readPlain(t, dev, vk), plain) {
				t.Fatal("plaintext changed")
			}
			keyFile := filepath.Join(filepath.Dir(img), "key")
			if out, err := cryptsetup(t, "open", "--test-passphrase", "--key-file", keyFile, img); err != nil {
				t.Fatalf("cryptsetup open --test-passphrase: %v\n%s", err, out)
			}
		})
	}
}
