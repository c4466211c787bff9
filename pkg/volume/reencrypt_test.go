package volume

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/xts"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// dataCrypt en- or decrypts data (a volume's data area) with vk as dm-crypt does
// (aes-xts-plain64, 4096-byte sectors, IV in 512-byte units), with
// golang.org/x/crypto/xts as an independent implementation.
func dataCrypt(t *testing.T, vk *secret.Key, data []byte, encrypt bool) []byte {
	t.Helper()
	c, err := xts.NewCipher(aes.NewCipher, vk.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	out := bytes.Clone(data)
	for s := 0; s < len(out); s += 4096 {
		if encrypt {
			c.Encrypt(out[s:s+4096], out[s:s+4096], uint64(s/512))
		} else {
			c.Decrypt(out[s:s+4096], out[s:s+4096], uint64(s/512))
		}
	}
	return out
}

// plantData writes random plaintext under v's volume key and returns it.
func plantData(t *testing.T, m *Manager, v *Volume) []byte {
	t.Helper()
	vk := volumeKey(t, m, v)
	st, _ := os.Stat(v.Device)
	plain := make([]byte, st.Size()-luks2.DefaultDataOffset)
	rand.Read(plain)
	f, err := os.OpenFile(v.Device, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(dataCrypt(t, vk, plain, true), luks2.DefaultDataOffset); err != nil {
		t.Fatal(err)
	}
	return plain
}

// volumeKey opens v's volume key through the KMS.
func volumeKey(t *testing.T, m *Manager, v *Volume) *secret.Key {
	t.Helper()
	f, err := luks2.OpenFile(v.Device, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vk, err := m.platformKey(context.Background(), v, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vk.Wipe)
	return vk
}

func plainOf(t *testing.T, m *Manager, v *Volume) []byte {
	t.Helper()
	b, err := os.ReadFile(v.Device)
	if err != nil {
		t.Fatal(err)
	}
	return dataCrypt(t, volumeKey(t, m, v), b[luks2.DefaultDataOffset:], false)
}

// before is a volume as it was before re-encryption.
type before struct {
	vk, recovery *secret.Key
	plain        []byte
}

// reencryptSetup formats a volume with a printed recovery key and plants
// random plaintext in it.
func reencryptSetup(t *testing.T) (*Manager, string, *Volume, before) {
	t.Helper()
	m := withRecovery(newTestManager(t), config.RecoveryPrint)
	img, fres := formatted(t, m, "data1")
	v := find(t, m, img)
	b := before{recovery: keyCopy(t, fres.Recovery.Key), plain: plantData(t, m, v)}
	b.vk, _ = volumeKey(t, m, v).Clone()
	t.Cleanup(b.vk.Wipe)
	return m, img, v, b
}

// checkReencrypted: a new volume key opened through the KMS, the same
// plaintext, the new recovery key and not the old, status healthy.
func checkReencrypted(t *testing.T, m *Manager, img string, b before, newRec *secret.Key) {
	t.Helper()
	v := find(t, m, img)
	if st, _ := v.Header.Reencryption(); st != nil {
		t.Fatal("still in re-encryption")
	}
	if volumeKey(t, m, v).Equal(b.vk) {
		t.Fatal("the volume key did not change")
	}
	if !bytes.Equal(plainOf(t, m, v), b.plain) {
		t.Fatal("plaintext changed")
	}
	if !recoveryOpens(t, v, newRec) || recoveryOpens(t, v, b.recovery) {
		t.Fatal("want the new recovery key to open the volume and the old not")
	}
	if ps := problems(t, m, img); len(ps) > 0 {
		t.Fatalf("status: %v", ps)
	}
}

func TestReencrypt(t *testing.T) {
	ctx := context.Background()
	m, img, v, b := reencryptSetup(t)
	var newRec *secret.Key
	var progress []uint64
	res, err := m.Reencrypt(ctx, v, ReencryptOptions{
		Hotzone:  1 << 20,
		Show:     func(r *ReencryptResult) error { newRec = keyCopy(t, r.Recovery.Key); return nil },
		Progress: func(done, total uint64) { progress = append(progress, done) },
	})
	if err != nil {
		t.Fatal(err)
	}
	res.Recovery.Wipe()
	if res.Resumed || res.Bytes != uint64(len(b.plain)) || len(progress) != 5 || progress[0] != 0 {
		t.Fatalf("result %+v, progress %v", res, progress)
	}
	checkReencrypted(t, m, img, b, newRec)
}

// killedAfterStart runs a re-encryption of v that dies right after the
// header went into re-encryption, and returns the recovery key it showed.
func killedAfterStart(t *testing.T, m *Manager, v *Volume) *secret.Key {
	t.Helper()
	var newRec *secret.Key
	armFailpoint(t, "reencrypt-after-start")
	if !crashed(func() {
		_, _ = m.Reencrypt(context.Background(), v, ReencryptOptions{Show: func(r *ReencryptResult) error { newRec = keyCopy(t, r.Recovery.Key); return nil }})
	}) {
		t.Fatal("the failpoint was not reached")
	}
	failpoint = func(string) {}
	return newRec
}

// A re-encryption killed after it started is resumed by the next run:
// the data is intact and the recovery key shown by the first run works.
func TestReencryptInterruptedResumes(t *testing.T) {
	ctx := context.Background()
	m, img, v, b := reencryptSetup(t)
	newRec := killedAfterStart(t, m, v)
	if ps := problems(t, m, img); !hasProblem(ps, "re-encryption is under way or was interrupted") || !hasProblem(ps, "atrest reencrypt data1") {
		t.Fatalf("status of a volume in re-encryption: %q, want the state and the command that finishes it", ps)
	}
	res, err := m.Reencrypt(ctx, find(t, m, img), ReencryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Resumed {
		t.Fatal("the second run did not resume")
	}
	checkReencrypted(t, m, img, b, newRec)
}

// cryptsetup reencrypt --resume-only finishes a run atrest started; it
// leaves the atrest token bound to no keyslot (it removed the old one).
// The next atrest reencrypt binds the token to the new keyslot and drops
// the old recovery token: the volume opens through the KMS again, status
// is healthy.
func TestReencryptFinishedByCryptsetup(t *testing.T) {
	testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	ctx := context.Background()
	m, img, v, b := reencryptSetup(t)
	newRec := killedAfterStart(t, m, v)
	v = find(t, m, img)
	secrets := m.unwrapAll(ctx, []string{v.UUID()}, []*token.Token{v.Platform})
	if secrets[0].err != nil {
		t.Fatal(secrets[0].err)
	}
	kf := filepath.Join(t.TempDir(), "platform")
	err := os.WriteFile(kf, secrets[0].ps.Bytes(), 0o600)
	wipeUnlocked(secrets)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cryptsetup", "--batch-mode", "reencrypt", "--resume-only", "--force-offline-reencrypt", "--key-file", kf, img).CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup reencrypt --resume-only: %v\n%s", err, out)
	}
	if v := find(t, m, img); v.Managed() {
		t.Fatal("want the atrest token bound to no keyslot after cryptsetup")
	}
	res, err := m.Reencrypt(ctx, find(t, m, img), ReencryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Resumed {
		t.Fatalf("result %+v", res)
	}
	checkReencrypted(t, m, img, b, newRec)
}
