package volume

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/looptest"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
	"golang.org/x/sys/unix"
)

// cryptsetupVolume is an image file (with loop, a loop device: root only)
// holding a LUKS2 volume made by cryptsetup (the oracle), opened by
// passphrase "old".
func cryptsetupVolume(t *testing.T, loop bool) (dev string, pass *secret.Key) {
	t.Helper()
	testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	if loop {
		testutil.RequireRoot(t)
		dev = looptest.Disk(t, 64).Path
	} else {
		dev = testImage(t)
	}
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--key-file", key, dev).CombinedOutput()
	if err != nil {
		t.Fatalf("cryptsetup luksFormat: %v\n%s", err, out)
	}
	pass, err = secret.FromBytes([]byte("old"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pass.Wipe)
	return dev, pass
}

// keyslotsOf is what cryptsetup sees: the keyslot numbers in luksDump.
func keyslotsOf(t *testing.T, dev string) int {
	t.Helper()
	out, err := exec.Command("cryptsetup", "luksDump", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("cryptsetup luksDump: %v\n%s", err, out)
	}
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasSuffix(l, ": luks2") && strings.HasPrefix(l, "  ") {
			n++
		}
	}
	return n
}

// spoilNewKeyslots overwrites on dev the area of every keyslot not in
// keep, so the keyslots a change just added do not open, and with
// readOnly then makes the loop device read-only, so that removing them
// fails too.
func spoilNewKeyslots(t *testing.T, dev string, keep []int, readOnly bool) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := luks2.OpenFile(dev, false)
	if err != nil {
		t.Fatal(err)
	}
	h, err := luks2.Read(context.Background(), r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	for id, k := range h.Keyslots {
		if slices.Contains(keep, id) {
			continue
		}
		junk := make([]byte, k.Area.Size)
		_, _ = rand.Read(junk)
		if _, err := f.WriteAt(junk, int64(k.Area.Offset)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if readOnly {
		if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.BLKROSET, 1); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if g, err := os.Open(dev); err == nil {
				_ = unix.IoctlSetPointerInt(int(g.Fd()), unix.BLKROSET, 0)
				g.Close()
			}
		})
	}
}

// An adopt whose new platform keyslot does not open removes it again and
// says the volume is as it was; when the removal fails too, it says that
// instead, and cryptsetup indeed sees the extra keyslot. Either way the
// old passphrase still opens the volume.
func TestAdoptRollbackSaysWhatHappened(t *testing.T) {
	for _, tc := range []struct {
		name       string
		removeFail bool
	}{{"removed", false}, {"removal fails", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dev, pass := cryptsetupVolume(t, tc.removeFail)
			m := newTestManager(t)
			armed := true
			prev := failpoint
			failpoint = func(name string) {
				if name == "adopt-after-add" && armed {
					armed = false
					spoilNewKeyslots(t, dev, []int{0}, tc.removeFail)
				}
			}
			t.Cleanup(func() { failpoint = prev })

			_, err := m.Adopt(context.Background(), AdoptOptions{Device: dev, Name: "adopted", Passphrase: pass})
			if !errors.Is(err, ErrVerify) {
				t.Fatalf("adopt with a spoilt new keyslot: %v, want ErrVerify", err)
			}
			asWas := strings.Contains(err.Error(), "the volume is as it was")
			if tc.removeFail {
				if asWas || !strings.Contains(err.Error(), "failed too") {
					t.Fatalf("the removal failed, but adopt says: %v", err)
				}
				if n := keyslotsOf(t, dev); n != 2 {
					t.Fatalf("cryptsetup sees %d keyslots, want the old and the spoilt new one", n)
				}
			} else {
				if !asWas {
					t.Fatalf("the removal worked, but adopt says: %v", err)
				}
				if n := keyslotsOf(t, dev); n != 1 {
					t.Fatalf("cryptsetup sees %d keyslots after the rollback, want 1", n)
				}
			}
			r, err := luks2.OpenFile(dev, false)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			h, err := luks2.Read(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			vk, _, err := h.Open(r, pass)
			if err != nil {
				t.Fatalf("the old passphrase stopped opening the volume: %v", err)
			}
			vk.Wipe()
		})
	}
}

// An adopt killed right after its commit (before the verification): the
// old passphrase still opens the volume, the new platform keyslot opens
// it through the KMS, and the next rekey leaves a healthy volume.
func TestAdoptInterrupted(t *testing.T) {
	ctx := context.Background()
	dev, pass := cryptsetupVolume(t, false)
	m := newTestManager(t)
	armFailpoint(t, "adopt-after-add")
	if !crashed(func() { _, _ = m.Adopt(ctx, AdoptOptions{Device: dev, Name: "cut", Passphrase: pass}) }) {
		t.Fatal("the failpoint was not reached")
	}
	failpoint = func(string) {}
	v := find(t, m, dev)
	r, err := luks2.OpenFile(dev, false)
	if err != nil {
		t.Fatal(err)
	}
	vk, _, err := v.Header.Open(r, pass)
	r.Close()
	if err != nil {
		t.Fatalf("the old passphrase stopped opening the volume: %v", err)
	}
	vk.Wipe()
	if err := platformOpens(t, m, v); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Rekey(ctx, v, RekeyOptions{}); err != nil {
		t.Fatal(err)
	}
	if ps := problems(t, m, dev); len(ps) > 0 {
		t.Fatalf("status after the next rekey: %v", ps)
	}
}
