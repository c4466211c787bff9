package volume

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
	"github.com/atrest/atrest/pkg/tpm2"
)

// platformKeyFile writes v's platform secret to a file for cryptsetup and
// systemd's tools.
func platformKeyFile(t *testing.T, m *Manager, v *Volume) string {
	t.Helper()
	kf, _ := platformKeyFileSlot(t, m, v)
	return kf
}

// platformKeyFileSlot is platformKeyFile that also returns the keyslot
// the secret opens (a policy volume's: the branch that answered first).
func platformKeyFileSlot(t *testing.T, m *Manager, v *Volume) (string, int) {
	t.Helper()
	secrets := m.unwrapAll(t.Context(), []string{v.UUID()}, []*token.Token{v.Platform})
	defer wipeUnlocked(secrets)
	if secrets[0].err != nil {
		t.Fatal(secrets[0].err)
	}
	kf := filepath.Join(t.TempDir(), "platform")
	if err := os.WriteFile(kf, secrets[0].ps.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return kf, secrets[0].slot
}

// A TPM keyslot (atrest tpm enroll's, or systemd-cryptenroll's) is sealed
// anew to the same PCRs and bank for the new volume key: after the run
// the volume opens through it (unsealed by the TPM, as the enrol
// verification does), and cryptsetup sees exactly one systemd-tpm2 token,
// bound to a keyslot whose unsealed passphrase opens the volume. A run
// killed once the header is in re-encryption ends the same way when resumed.
func TestReencryptReSealsTPMKeyslot(t *testing.T) {
	cs := testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	s := vaulttest.Shared(t)
	// killed: atrest's enrolment, the run killed right after the header
	// went into re-encryption with the new TPM keyslot, then resumed.
	for _, by := range []string{"atrest", "systemd-cryptenroll", "killed"} {
		t.Run(by, func(t *testing.T) {
			m, r := tpmVault(t, s, "")
			img, _ := formatted(t, m, "tre")
			if by != "systemd-cryptenroll" {
				if _, err := m.TPMEnroll(t.Context(), find(t, m, img), TPMOptions{PCRs: []int{7}}); err != nil {
					t.Fatal(err)
				}
			} else {
				enroll := testutil.RequireCommand(t, "systemd-cryptenroll", "systemd")
				kf := platformKeyFile(t, m, find(t, m, img))
				if out, err := exec.Command(enroll, "--unlock-key-file="+kf, "--tpm2-device="+r.sw.Device, "--tpm2-pcrs=7", img).CombinedOutput(); err != nil {
					t.Fatalf("systemd-cryptenroll: %v\n%s", err, out)
				}
			}
			v := find(t, m, img)
			old := tpmKeyslots(v)
			if len(old) != 1 {
				t.Fatalf("TPM keyslots before: %v", old)
			}
			plain := plantData(t, m, v)
			oldVK, _ := volumeKey(t, m, v).Clone()
			defer oldVK.Wipe()
			show := ReencryptOptions{Hotzone: 1 << 20, Show: func(*ReencryptResult) error { return nil }}
			if by == "killed" {
				armFailpoint(t, "reencrypt-after-start")
				if !crashed(func() { _, _ = m.Reencrypt(t.Context(), v, show) }) {
					t.Fatal("the failpoint was not reached")
				}
				failpoint = func(string) {}
				v = find(t, m, img)
			}
			res, err := m.Reencrypt(t.Context(), v, show)
			if err != nil {
				t.Fatal(err)
			}
			if res.Resumed != (by == "killed") {
				t.Fatalf("resumed: %v", res.Resumed)
			}
			res.Recovery.Wipe()
			for _, w := range res.Warnings {
				if strings.Contains(w, "TPM") {
					t.Fatalf("warning: %s", w)
				}
			}
			v = find(t, m, img)
			if volumeKey(t, m, v).Equal(oldVK) || !bytes.Equal(plainOf(t, m, v), plain) {
				t.Fatal("want a new volume key and the same plaintext")
			}
			if n, all := tpmKeyslotsOpening(t, m, v); n != 1 || !all {
				t.Fatalf("TPM keyslots opening the new volume key: %d (all: %v), want 1", n, all)
			}
			ids, toks, _ := tpmTokens(v.Header)
			if !slices.Equal(toks[0].PCRs, []int{7}) || toks[0].Bank != tpm2.SHA256 || toks[0].PIN {
				t.Fatalf("new binding: %+v, want PCR 7, sha256, no PIN", toks[0].Sealed)
			}
			out, err := exec.Command(cs, "luksDump", "--dump-json-metadata", img).Output()
			if err != nil {
				t.Fatal(err)
			}
			var dump struct {
				Keyslots map[string]json.RawMessage
				Tokens   map[string]struct {
					Type     string
					Keyslots []string
				}
			}
			if err := json.Unmarshal(out, &dump); err != nil {
				t.Fatal(err)
			}
			var bound []string
			for _, tk := range dump.Tokens {
				if tk.Type == tpm2.TokenType {
					bound = append(bound, tk.Keyslots...)
				}
			}
			want := strconv.Itoa(toks[0].Keyslot)
			if len(bound) != 1 || bound[0] != want || dump.Keyslots[want] == nil {
				t.Fatalf("luksDump: systemd-tpm2 tokens bound to %v, want one bound to keyslot %s", bound, want)
			}
			// cryptsetup opens that keyslot with the TPM's secret.
			cryptsetupOpensTPMKeyslot(t, cs, m, img, toks[0], nil)
			if ps := problems(t, m, img); len(ps) > 0 {
				t.Fatalf("status: %v (token %v)", ps, ids)
			}
		})
	}
}

// A TPM keyslot that needs a PIN is refused without the PIN, with a usage
// error naming --pin-file and the way out, before anything is written.
func TestReencryptRefusesAPINKeyslot(t *testing.T) {
	m, _ := tpmVault(t, vaulttest.Shared(t), "")
	img := enrolled(t, m, "trp", testPIN(t, "1234"))
	sum := imageSum(t, img)
	_, err := m.Reencrypt(t.Context(), find(t, m, img), ReencryptOptions{Show: func(*ReencryptResult) error { return nil }})
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "needs a PIN") || !strings.Contains(err.Error(), "--pin-file") || !strings.Contains(err.Error(), "atrest tpm remove") {
		t.Fatalf("reencrypt of a volume with a PIN keyslot: %v, want a usage error naming --pin-file and atrest tpm remove", err)
	}
	if imageSum(t, img) != sum {
		t.Fatal("the refused reencrypt changed the image")
	}
}

// A PIN TPM keyslot (atrest tpm enroll --pin's, or systemd-cryptenroll
// --tpm2-with-pin's) is re-sealed with the PIN given: a wrong PIN is
// refused as the TPM's wrong-PIN error with the image byte-identical; the
// right one gives one PIN keyslot on the same PCRs that the TPM unseals
// with that PIN (not without it) and that cryptsetup opens with the
// unsealed secret; the plaintext is intact under a new key. Killed after
// its start, the run is resumed without the PIN.
func TestReencryptReSealsAPINKeyslot(t *testing.T) {
	cs := testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	s := vaulttest.Shared(t)
	for _, by := range []string{"atrest", "systemd-cryptenroll", "killed"} {
		t.Run(by, func(t *testing.T) {
			m, r := tpmVault(t, s, "")
			pin := testPIN(t, "2468")
			var img string
			if by == "systemd-cryptenroll" {
				enroll := testutil.RequireCommand(t, "systemd-cryptenroll", "systemd")
				img, _ = formatted(t, m, "tpin")
				kf := platformKeyFile(t, m, find(t, m, img))
				cmd := exec.Command(enroll, "--unlock-key-file="+kf, "--tpm2-device="+r.sw.Device, "--tpm2-pcrs=7", "--tpm2-with-pin=yes", img)
				cmd.Env = append(os.Environ(), "NEWPIN=2468")
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("systemd-cryptenroll --tpm2-with-pin: %v\n%s", err, out)
				}
			} else {
				img = enrolled(t, m, "tpin", pin)
			}
			v := find(t, m, img)
			if _, toks, _ := tpmTokens(v.Header); len(toks) != 1 || !toks[0].PIN {
				t.Fatalf("want one PIN keyslot before, got %v", toks)
			}
			plain := plantData(t, m, v)
			oldVK, _ := volumeKey(t, m, v).Clone()
			defer oldVK.Wipe()
			sum := imageSum(t, img)
			show := func(*ReencryptResult) error { return nil }
			_, err := m.Reencrypt(t.Context(), v, ReencryptOptions{Show: show, PIN: testPIN(t, "1357")})
			if k := Classify(err).Kind; k != KindWrongPIN {
				t.Fatalf("a wrong PIN: %v (%s), want the TPM's wrong-PIN error", err, k)
			}
			if imageSum(t, img) != sum {
				t.Fatal("the refused reencrypt changed the image")
			}
			o := ReencryptOptions{Hotzone: 1 << 20, Show: show, PIN: pin}
			if by == "killed" {
				armFailpoint(t, "reencrypt-after-start")
				if !crashed(func() { _, _ = m.Reencrypt(t.Context(), find(t, m, img), o) }) {
					t.Fatal("the failpoint was not reached")
				}
				failpoint = func(string) {}
				o.PIN = nil
			}
			res, err := m.Reencrypt(t.Context(), find(t, m, img), o)
			if err != nil {
				t.Fatal(err)
			}
			res.Recovery.Wipe()
			if res.Resumed != (by == "killed") || len(res.Warnings) > 0 {
				t.Fatalf("result %+v", res)
			}
			v = find(t, m, img)
			vk := volumeKey(t, m, v)
			if vk.Equal(oldVK) || !bytes.Equal(plainOf(t, m, v), plain) {
				t.Fatal("want a new volume key and the same plaintext")
			}
			ids, toks, _ := tpmTokens(v.Header)
			if len(toks) != 1 || !toks[0].PIN || !slices.Equal(toks[0].PCRs, []int{7}) || toks[0].Bank != tpm2.SHA256 {
				t.Fatalf("after: %d TPM tokens, want one PIN keyslot on PCR 7 sha256: %+v", len(toks), toks)
			}
			f, err := luks2.OpenFile(img, false)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			probe := tpmSlot{id: ids[0], device: m.cfg.TPM.Device, pin: pin}
			if err := probe.verify(v.Header, f, vk); err != nil {
				t.Fatalf("the re-sealed PIN keyslot with its PIN: %v", err)
			}
			if _, err := unsealPassphrase(m.cfg.TPM.Device, toks[0], nil); err == nil {
				t.Fatal("the re-sealed PIN keyslot unseals without its PIN")
			}
			cryptsetupOpensTPMKeyslot(t, cs, m, img, toks[0], pin)
			if ps := problems(t, m, img); len(ps) > 0 {
				t.Fatalf("status: %v", ps)
			}
		})
	}
}

// cryptsetupOpensTPMKeyslot checks that cryptsetup opens tok's keyslot
// with the secret the TPM unseals (with pin, when not nil).
func cryptsetupOpensTPMKeyslot(t *testing.T, cs string, m *Manager, img string, tok *tpm2.Token, pin *secret.Key) {
	t.Helper()
	pass, err := unsealPassphrase(m.cfg.TPM.Device, tok, pin)
	if err != nil {
		t.Fatal(err)
	}
	kf := filepath.Join(t.TempDir(), "tpm")
	err = os.WriteFile(kf, pass.Bytes(), 0o600)
	pass.Wipe()
	if err != nil {
		t.Fatal(err)
	}
	slot := strconv.Itoa(tok.Keyslot)
	if out, err := exec.Command(cs, "open", "--test-passphrase", "--key-slot", slot, "--key-file", kf, img).CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup open --test-passphrase with the TPM keyslot %s: %v\n%s", slot, err, out)
	}
}

// imageSum is the sha256 of a whole image file.
func imageSum(t *testing.T, img string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}
