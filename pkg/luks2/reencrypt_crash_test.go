package luks2

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"testing"

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

// reencryptAll starts and runs a re-encryption with 16 KiB hotzones.
func reencryptAll(t testing.TB, dev Device, oldVK *secret.Key) (*secret.Key, error) {
	newVK, err := startReencrypt(t, dev, oldVK)
	if err != nil {
		return nil, err
	}
	_, err = resume(t, dev, 16<<10)
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
	base, oldVK, plain := reencBase(t)
	dry := &atomDevice{memDevice: base.snapshot(), budget: 1 << 30}
	if _, err := reencryptAll(t, dry, oldVK); err != nil {
		t.Fatal(err)
	}
	total := dry.used
	_, haveCryptsetup := exec.LookPath("cryptsetup")
	dir := t.TempDir()
	inReencryption, byCryptsetup := 0, 0
	for budget := 0; budget < total; budget++ {
		dev := &atomDevice{memDevice: base.snapshot(), budget: budget}
		if _, err := reencryptAll(t, dev, oldVK); err == nil {
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
				done, err := cryptsetupResume(t, img)
				if err != nil {
					t.Fatalf("budget %d (%+v): cryptsetup resume: %v", budget, *st, err)
				}
				checkFinished(t, budget, "cryptsetup", done, plain)
				byCryptsetup++
			}
			os.Remove(img)
		}
		// atrest: resume, or start again if nothing was committed.
		if st != nil {
			inReencryption++
			if _, err := resume(t, crashed, 16<<10); err != nil {
				t.Fatalf("budget %d (%+v): atrest resume: %v", budget, *st, err)
			}
		} else {
			vk, _, err := h.Open(crashed, pass(t, "platform"))
			if err != nil {
				t.Fatalf("budget %d: %v", budget, err)
			}
			if vk.Equal(oldVK) {
				if _, err := reencryptAll(t, crashed, oldVK); err != nil {
					t.Fatalf("budget %d: start again: %v", budget, err)
				}
			}
			vk.Wipe()
		}
		checkFinished(t, budget, "atrest", crashed, plain)
	}
	t.Logf("%d interruption points; %d left the header in re-encryption (resumed by atrest and by cryptsetup: %d)", total, inReencryption, byCryptsetup)
	if inReencryption == 0 {
		t.Fatal("no interruption left a re-encryption to resume")
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
