package luks2

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

var reencryptAllStates = flag.Bool("luks2.reencryptall", false, "cryptsetup checks every state the re-encryption crash test leaves (not every 8th)")

// atomDevice loses power after budget 4 KiB pages have been written: a
// write lands page by page, and the page that would exceed the budget and
// everything after it do not land. Pages are the unit a disk writes
// atomically here; the checksum resilience (cryptsetup's as atrest's)
// rests on whole blocks of the encryption sector size landing or not.
//
// A write of more than 64 KiB is one atom: only the wipes of removed
// keyslot areas are that large, and once they run no header names those
// areas, so every page of them leaves the same state.
type atomDevice struct {
	*memDevice
	budget, used int
}

func (a *atomDevice) WriteAt(p []byte, off int64) (int, error) {
	if len(p) > 64<<10 {
		if a.used >= a.budget {
			return 0, errPowerLoss
		}
		a.used++
		return a.memDevice.WriteAt(p, off)
	}
	for i := 0; i < len(p); {
		n := min(len(p)-i, int(memPage-(off+int64(i))%memPage))
		if a.used >= a.budget {
			return i, errPowerLoss
		}
		a.used++
		a.memDevice.WriteAt(p[i:i+n], off+int64(i))
		i += n
	}
	return len(p), nil
}

// reencLayout is what a re-encryption's start enrols and how it is
// resumed: the platform layout enrols the same secret under the new key
// (a plain atrest volume); the two-secrets layout has one secret per key
// and a recovery passphrase under both (a policy volume's, pkg/volume).
type reencLayout struct {
	start func(t testing.TB, dev Device, oldVK *secret.Key) (*secret.Key, error)
	// passes resume it (atrest); cryptsetup gets csPass; rebind moves
	// the old platform keyslot's token to the new keyslot at the end.
	passes []string
	csPass string
	rebind bool
	// check inspects the finished header (the new key it opens with
	// newPass and the tokens).
	check func(t *testing.T, budget int, who string, dev *memDevice, plain []byte)
}

var platformLayout = reencLayout{start: startReencrypt, passes: []string{"platform"}, csPass: "platform", rebind: true, check: checkFinished}

// reencryptAll starts and runs a re-encryption with 16 KiB hotzones.
func (l reencLayout) reencryptAll(t testing.TB, dev Device, oldVK *secret.Key) (*secret.Key, error) {
	newVK, err := l.start(t, dev, oldVK)
	if err != nil {
		return nil, err
	}
	_, err = resumeWith(t, dev, 16<<10, l.rebind, l.passes...)
	return newVK, err
}

// TestReencryptCrashAtEveryWrite interrupts a re-encryption of 64 KiB in
// 16 KiB hotzones after every page it writes. Each state left behind must
// (a) be finished by atrest — resumed when the header is in re-encryption,
// started again when the interruption came before the first commit — with
// the plaintext unchanged and the platform secret opening the key, and
// (b) be accepted by cryptsetup luksDump and, where it is in
// re-encryption, finished by cryptsetup repair and reencrypt --resume-only
// with the same plaintext (every 8th state unless -luks2.reencryptall).
func TestReencryptCrashAtEveryWrite(t *testing.T) {
	crashAtEveryWrite(t, platformLayout)
}

// TestReencryptCrashAtEveryWriteTwoSecrets is the same with a policy
// volume's layout: the new key's keyslot has its own secret, the old
// key's token stays bound to the old keyslot, and a recovery passphrase
// is enrolled under both keys. atrest resumes with the two secrets,
// cryptsetup with the recovery passphrase alone; at the end the old
// token is gone with the old keyslots and the new one is bound to the new
// keyslot.
func TestReencryptCrashAtEveryWriteTwoSecrets(t *testing.T) {
	crashAtEveryWrite(t, reencLayout{start: startTwoSecrets, passes: []string{"platform", "new-branch"}, csPass: "recovery", check: checkTwoSecrets})
}

func crashAtEveryWrite(t *testing.T, l reencLayout) {
	base, oldVK, plain := reencBase(t)
	dry := &atomDevice{memDevice: base.snapshot(), budget: 1 << 30}
	if _, err := l.reencryptAll(t, dry, oldVK); err != nil {
		t.Fatal(err)
	}
	total := dry.used
	_, haveCryptsetup := exec.LookPath("cryptsetup")
	dir := t.TempDir()
	inReencryption, byCryptsetup := 0, 0
	for budget := 0; budget < total; budget++ {
		dev := &atomDevice{memDevice: base.snapshot(), budget: budget}
		if _, err := l.reencryptAll(t, dev, oldVK); err == nil {
			t.Fatalf("budget %d of %d: no power loss", budget, total)
		}
		crashed := dev.memDevice.snapshot()
		h, err := Read(context.Background(), crashed)
		if err != nil {
			t.Fatalf("budget %d: unreadable after the crash: %v", budget, err)
		}
		st, err := h.Reencryption()
		if err != nil {
			t.Fatalf("budget %d: %v", budget, err)
		}
		// cryptsetup sees every 8th state (resuming costs it about a
		// second), every state with -luks2.reencryptall.
		if haveCryptsetup == nil && (*reencryptAllStates || budget%8 == 0) {
			img := imageOf(t, crashed, dir, fmt.Sprintf("crash%d.img", budget))
			if out, err := cryptsetup(t, "luksDump", img); err != nil {
				t.Fatalf("budget %d: cryptsetup luksDump refuses the state: %v\n%s", budget, err, out)
			}
			if st != nil {
				done, err := cryptsetupResumeWith(t, img, l.csPass)
				if err != nil {
					t.Fatalf("budget %d (%+v): cryptsetup resume: %v", budget, *st, err)
				}
				l.check(t, budget, "cryptsetup", done, plain)
				byCryptsetup++
			}
			os.Remove(img)
		}
		// atrest: resume, or start again if nothing was committed.
		if st != nil {
			inReencryption++
			if _, err := resumeWith(t, crashed, 16<<10, l.rebind, l.passes...); err != nil {
				t.Fatalf("budget %d (%+v): atrest resume: %v", budget, *st, err)
			}
		} else {
			vk, _, err := h.Open(crashed, pass(t, "platform"))
			if err == nil && vk.Equal(oldVK) {
				if _, err := l.reencryptAll(t, crashed, oldVK); err != nil {
					t.Fatalf("budget %d: start again: %v", budget, err)
				}
			} else if err != nil && l.rebind {
				t.Fatalf("budget %d: %v", budget, err)
			}
			vk.Wipe()
		}
		l.check(t, budget, "atrest", crashed, plain)
	}
	t.Logf("%d interruption points; %d left the header in re-encryption (resumed by atrest and by cryptsetup: %d)", total, inReencryption, byCryptsetup)
	if inReencryption == 0 {
		t.Fatal("no interruption left a re-encryption to resume")
	}
}

// startTwoSecrets starts a re-encryption in the two-secrets layout: the
// new key's keyslot for "new-branch" with token 1 bound to it (token 0
// stays bound to the old keyslot 0), and "recovery" under both keys with
// token 2 bound to both.
func startTwoSecrets(t testing.TB, dev Device, oldVK *secret.Key) (*secret.Key, error) {
	t.Helper()
	u, newVK := beginReencrypt(t, dev, oldVK)
	opts := KeyslotOptions{Slot: AnySlot, KDF: kdf.Platform()}
	var slots []int
	for _, k := range []struct {
		vk   *secret.Key
		pass string
	}{{newVK, "new-branch"}, {newVK, "recovery"}, {oldVK, "recovery"}} {
		id, err := u.AddKeyslot(k.vk, pass(t, k.pass), opts)
		if err != nil {
			t.Fatal(err)
		}
		slots = append(slots, id)
	}
	if _, err := u.SetToken(1, []byte(strings.Replace(reencToken, `["0"]`, `["`+itoa(slots[0])+`"]`, 1))); err != nil {
		t.Fatal(err)
	}
	if _, err := u.SetToken(2, []byte(`{"type":"systemd-recovery","keyslots":["`+itoa(slots[1])+`","`+itoa(slots[2])+`"]}`)); err != nil {
		t.Fatal(err)
	}
	_, err := u.CommitReencrypt(context.Background(), dev)
	return newVK, err
}

// checkTwoSecrets: the re-encryption is over, "new-branch" and "recovery"
// open the new key (the old key's keyslots are gone, "platform" opens
// nothing), the data decrypts to the original plaintext, token 0 is gone
// with the old keyslot (bound to none after cryptsetup), token 1 is bound
// to the new-branch keyslot and token 2 to the recovery passphrase's new
// keyslot alone.
func checkTwoSecrets(t *testing.T, budget int, who string, dev *memDevice, plain []byte) {
	t.Helper()
	h, err := Read(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := h.Reencryption(); st != nil || len(h.Config.Requirements) > 0 {
		t.Fatalf("budget %d, after %s: still in re-encryption", budget, who)
	}
	if _, _, err := h.Open(dev, pass(t, "platform")); err == nil {
		t.Fatalf("budget %d, after %s: the old key's secret still opens a keyslot", budget, who)
	}
	vk, slot, err := h.Open(dev, pass(t, "new-branch"))
	if err != nil {
		t.Fatalf("budget %d, after %s: %v", budget, who, err)
	}
	defer vk.Wipe()
	rk, rslot, err := h.Open(dev, pass(t, "recovery"))
	if err != nil || !rk.Equal(vk) {
		t.Fatalf("budget %d, after %s: the recovery passphrase: %v", budget, who, err)
	}
	rk.Wipe()
	if !bytes.Equal(readPlain(t, dev, vk), plain) {
		t.Fatalf("budget %d, after %s: plaintext changed", budget, who)
	}
	// cryptsetup leaves a token of removed keyslots bound to none
	// (pkg/volume removes it then); atrest removes it with them.
	t0, t1, t2 := h.Tokens[0], h.Tokens[1], h.Tokens[2]
	if t0 != nil && (who != "cryptsetup" || len(t0.Keyslots) > 0) || t1 == nil || len(t1.Keyslots) != 1 || t1.Keyslots[0] != slot || t2 == nil || len(t2.Keyslots) != 1 || t2.Keyslots[0] != rslot {
		t.Fatalf("budget %d, after %s: tokens %v, want 0 gone, 1 bound to %d, 2 to %d", budget, who, h.TokenIDs(), slot, rslot)
	}
}

// checkFinished: the re-encryption is over, the platform secret opens a new
// key, the data decrypts to the original plaintext and token 0 is bound to
// the new keyslot.
func checkFinished(t *testing.T, budget int, who string, dev *memDevice, plain []byte) {
	t.Helper()
	h, vk, slot := finished(t, dev)
	if !bytes.Equal(readPlain(t, dev, vk), plain) {
		t.Fatalf("budget %d, after %s: plaintext changed", budget, who)
	}
	if tok := h.Tokens[0]; tok == nil || len(tok.Keyslots) != 1 || tok.Keyslots[0] != slot {
		t.Fatalf("budget %d, after %s: token 0 is %v, want bound to keyslot %d", budget, who, tok, slot)
	}
}
