package volume

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/luks2test"
)

// A re-encryption cryptsetup started on an atrest volume (reencrypt
// --init-only with the platform secret; cryptsetup copied the atrest
// token's keyslot assignment to its new keyslot) is resumed by atrest
// reencrypt, not refused or corrupted: a new volume key, the plaintext
// intact, the volume opens through the KMS. cryptsetup re-enrolled only
// the keyslot it was given, so the only problem status shows afterwards
// is the missing recovery keyslot, naming the command that makes one.
func TestReencryptResumesCryptsetupStarted(t *testing.T) {
	cs := testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	m, img, v, b := reencryptSetup(t)
	kf := platformKeyFile(t, m, v)
	if out, err := exec.Command(cs, "--batch-mode", "reencrypt", "--init-only", "--key-slot", "0", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", kf, img).CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup reencrypt --init-only: %v\n%s", err, out)
	}
	if st, _ := find(t, m, img).Header.Reencryption(); st == nil {
		t.Fatal("cryptsetup left no re-encryption")
	}
	res, err := m.Reencrypt(t.Context(), find(t, m, img), ReencryptOptions{Show: func(*ReencryptResult) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Resumed || res.Bytes != uint64(len(b.plain)) {
		t.Fatalf("result %+v, want a resumed run over all the data", res)
	}
	v = find(t, m, img)
	if st, _ := v.Header.Reencryption(); st != nil || volumeKey(t, m, v).Equal(b.vk) || !bytes.Equal(plainOf(t, m, v), b.plain) {
		t.Fatal("want the re-encryption finished, a new volume key and the same plaintext")
	}
	if ps := problems(t, m, img); len(ps) != 1 || !strings.Contains(ps[0], "atrest recovery rotate") {
		t.Fatalf("status: %q, want only the missing recovery keyslot", ps)
	}
}

// withResilience rewrites the area type of img's reencrypt keyslot (both
// header copies, valid checksums).
func withResilience(t *testing.T, img, typ string) {
	t.Helper()
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := luks2test.Rewrite(raw, func(doc map[string]any) {
		for _, k := range doc["keyslots"].(map[string]any) {
			if ks := k.(map[string]any); ks["type"] == "reencrypt" {
				luks2test.Obj(ks, "area")["type"] = typ
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A re-encryption whose resilience atrest does not resume is refused by
// atrest reencrypt with the kind of a volume in re-encryption (exit 21),
// before the KMS is asked, the image byte-identical: cryptsetup's journal
// names cryptsetup reencrypt --resume-only, a type cryptsetup does not
// know either says no tool resumes it (and cryptsetup refuses it too).
func TestReencryptRefusesUnknownResilience(t *testing.T) {
	cs := testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	for _, c := range []struct{ typ, want string }{
		{"journal", "finish it with cryptsetup reencrypt --resume-only"},
		{"bogus", "no tool resumes it"},
	} {
		t.Run(c.typ, func(t *testing.T) {
			m, img, v, _ := reencryptSetup(t)
			killedAfterStart(t, m, v)
			withResilience(t, img, c.typ)
			sum := imageSum(t, img)
			_, err := m.Reencrypt(t.Context(), find(t, m, img), ReencryptOptions{Show: func(*ReencryptResult) error { return nil }})
			if Classify(err).Kind != KindReencrypting || !strings.Contains(err.Error(), `resilience "`+c.typ+`"`) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("reencrypt with resilience %s: %v (kind %s), want kind reencrypting naming %q", c.typ, err, Classify(err).Kind, c.want)
			}
			if imageSum(t, img) != sum {
				t.Fatal("the refused reencrypt changed the image")
			}
			if c.typ == "bogus" {
				kf := platformKeyFile(t, m, find(t, m, img))
				if out, err := exec.Command(cs, "--batch-mode", "reencrypt", "--resume-only", "--force-offline-reencrypt", "--key-file", kf, img).CombinedOutput(); err == nil {
					t.Fatalf("cryptsetup resumed resilience bogus:\n%s", out)
				}
				if imageSum(t, img) != sum {
					t.Fatal("cryptsetup's refusal changed the image")
				}
			}
		})
	}
}

// A device something uses is refused by the offline run with the in-use
// kind, before anything is written: here the image backs a loop device
// that backs another, over the data area, whose file system is mounted.
func TestReencryptRefusesADeviceInUse(t *testing.T) {
	testutil.RequireRoot(t)
	losetup := testutil.RequireCommand(t, "losetup", "mount")
	testutil.RequireCommand(t, "mkfs.ext4", "e2fsprogs")
	m, img, _, _ := reencryptSetup(t)
	attach := func(args ...string) string {
		out, err := exec.Command(losetup, append([]string{"--find", "--show"}, args...)...).Output()
		if err != nil {
			t.Fatalf("losetup %v: %v", args, err)
		}
		loop := strings.TrimSpace(string(out))
		t.Cleanup(func() { exec.Command(losetup, "-d", loop).Run() })
		return loop
	}
	outer := attach(img)
	inner := attach("--offset", strconv.Itoa(luks2.DefaultDataOffset), outer)
	run(t, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", inner)
	mnt := t.TempDir()
	run(t, "mount", "-o", "ro,noload", inner, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	sum := imageSum(t, img)
	_, err := m.Reencrypt(t.Context(), find(t, m, img), ReencryptOptions{Show: func(*ReencryptResult) error { return nil }})
	if !errors.Is(err, blockdev.ErrInUse) || Classify(err).Kind != KindInUse || !strings.Contains(err.Error(), "reencrypt needs the device unused") {
		t.Fatalf("reencrypt of a device in use: %v (kind %s), want kind in-use", err, Classify(err).Kind)
	}
	if imageSum(t, img) != sum {
		t.Fatal("the refused reencrypt changed the image")
	}
}
