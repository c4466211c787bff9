package volume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/swtpmtest"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// dumpedVolumeKey is the volume key cryptsetup luksDump --dump-volume-key
// gives with the passphrase key.
func dumpedVolumeKey(t *testing.T, img string, key *secret.Key) []byte {
	t.Helper()
	cs := testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	kf := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(kf, key.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cs, "--batch-mode", "luksDump", "--dump-volume-key", "--key-file", kf, img).CombinedOutput()
	if err != nil {
		t.Fatalf("cryptsetup luksDump --dump-volume-key: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(?s)MK dump:\s*(.*?)\n\S|(?s)MK dump:\s*(.*)$`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no key in the dump:\n%s", out)
	}
	hexKey := strings.Join(strings.Fields(m[1]+m[2]), "")
	vk, err := hex.DecodeString(hexKey)
	if err != nil {
		t.Fatalf("key %q: %v", hexKey, err)
	}
	return vk
}

// keysOfTokens opens, in a header under re-encryption, a keyslot of each
// atrest token through its factors and reports which volume key each
// gives: old for the old policy, new for the new.
func keysOfTokens(t *testing.T, m *Manager, v *Volume) map[*token.Token]*secret.Key {
	t.Helper()
	f, err := luks2.OpenFile(v.Device, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	toks := append([]*token.Token{v.Platform}, othersOf(v)...)
	uuids := make([]string, len(toks))
	for i := range uuids {
		uuids[i] = v.UUID()
	}
	res := m.unwrapAll(t.Context(), uuids, toks)
	defer wipeUnlocked(res)
	out := map[*token.Token]*secret.Key{}
	for i, r := range res {
		if r.err != nil {
			t.Fatalf("token %d: %v", i, r.err)
		}
		vk, err := openKeyslot(v.Header, f, r.slot, r.ps)
		if err != nil {
			t.Fatalf("token %d, keyslot %d: %v", i, r.slot, err)
		}
		t.Cleanup(vk.Wipe)
		out[toks[i]] = vk
	}
	return out
}

func sum(b []byte) [32]byte { return sha256.Sum256(b) }

// policyReencrypted checks a policy volume after its re-encryption: the
// same policy on new keyslots only (the old ones gone), a new volume key
// (cryptsetup's dump with the new recovery key gives it), the plaintext's
// sha256 unchanged, every branch opening through all its shares, the new
// recovery key opening and the old not, status healthy.
func policyReencrypted(t *testing.T, m *Manager, img, expr string, oldSlots []int, oldVK, oldRec, newRec *secret.Key, plain []byte) *Volume {
	t.Helper()
	v := find(t, m, img)
	if st, _ := v.Header.Reencryption(); st != nil {
		t.Fatal("still in re-encryption")
	}
	if v.Platform.Policy == nil || v.Platform.Policy.Expr != expr || len(v.Others) != 0 {
		t.Fatalf("token %+v with %d others, want policy %s alone", v.Platform.Policy, len(v.Others), expr)
	}
	for _, s := range oldSlots {
		if _, ok := v.Header.Keyslots[s]; ok && !slices.Contains(v.Platform.Slots(), s) && !slices.Contains(v.Recovery, s) {
			t.Fatalf("the old policy keyslot %d is still there", s)
		}
	}
	vk := volumeKey(t, m, v)
	if vk.Equal(oldVK) {
		t.Fatal("the volume key did not change")
	}
	if !bytes.Equal(dumpedVolumeKey(t, img, newRec), vk.Bytes()) {
		t.Fatal("cryptsetup's dump with the new recovery key is not the key the policy opens")
	}
	if sum(plainOf(t, m, v)) != sum(plain) {
		t.Fatal("the plaintext's sha256 changed")
	}
	f, err := luks2.OpenFile(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := m.verifyToken(t.Context(), v.Header, f, v.Platform, vk); err != nil {
		t.Fatalf("a branch of the new policy does not open through all its shares: %v", err)
	}
	if !recoveryOpens(t, v, newRec) || recoveryOpens(t, v, oldRec) {
		t.Fatal("want the new recovery key to open the volume and the old not")
	}
	if ps := problems(t, m, img); len(ps) > 0 {
		t.Fatalf("status: %v", ps)
	}
	return v
}

// policyBefore formats a policy volume with a printed recovery key and
// random plaintext; it returns the image, the volume, its key, recovery
// key and plaintext.
func policyBefore(t *testing.T, m *Manager, name string) (string, *Volume, *secret.Key, *secret.Key, []byte) {
	t.Helper()
	img, key := formattedWithKey(t, m, name)
	v := find(t, m, img)
	plain := plantData(t, m, v)
	vk, err := volumeKey(t, m, v).Clone()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vk.Wipe)
	return img, v, vk, key, plain
}

// A volume under any: [tpm, vault], all: [tpm, vault] and a threshold of
// tpm, vault and KMIP is re-encrypted with its policy made again under
// the new key (swtpm, Vault, pykmip-server): new keyslots only, the new
// key in cryptsetup's dump, the plaintext intact, each branch opening
// through its shares; any: [tpm, vault] then opens through the TPM with
// Vault frozen and through Vault with the TPM gone.
func TestReencryptPolicyVolume(t *testing.T) {
	for _, c := range []struct {
		name, pol, expr string
		kmip            bool
	}{
		{"any", "any: [tpm, vault]", "any(tpm,vault)", false},
		{"all", "all: [tpm, vault]", "all(tpm,vault)", false},
		{"threshold", "threshold: {k: 2, of: [tpm, vault, kmip]}", "threshold(2;tpm,vault,kmip)", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var m *Manager
			var r tpmRig
			if c.name == "any" {
				m, r = tpmPolicy(t, c.pol)
			} else {
				boot, _, _, _ := nestedRig(t, c.pol, c.kmip)
				m = boot()
			}
			m = withRecovery(m, config.RecoveryPrint)
			img, v, oldVK, oldRec, plain := policyBefore(t, m, "pre"+c.name)
			if v.Platform.Policy.Expr != c.expr {
				t.Fatalf("policy %s, want %s", v.Platform.Policy.Expr, c.expr)
			}
			oldSlots := v.Platform.Slots()
			var newRec *secret.Key
			res, err := m.Reencrypt(t.Context(), v, ReencryptOptions{Hotzone: 1 << 20, Show: func(r *ReencryptResult) error { newRec = keyCopy(t, r.Recovery.Key); return nil }})
			if err != nil {
				t.Fatal(err)
			}
			res.Recovery.Wipe()
			if res.Resumed || res.Bytes != uint64(len(plain)) || len(res.Warnings) > 0 {
				t.Fatalf("result %+v", res)
			}
			v = policyReencrypted(t, m, img, c.expr, oldSlots, oldVK, oldRec, newRec, plain)
			for _, s := range v.Platform.Slots() {
				if slices.Contains(oldSlots, s) {
					t.Fatalf("new keyslots %v reuse an old one %v", v.Platform.Slots(), oldSlots)
				}
			}
			if c.name != "any" {
				return
			}
			r.s.Freeze(t)
			if by, err, _ := unlockWithin(t, r.boot(), img); err != nil || !slices.Equal(by, []string{"tpm"}) {
				t.Fatalf("with Vault frozen: opened by %v, %v; want tpm", by, err)
			}
			r.s.Thaw(t)
			r.sw.Stop()
			if by, err, _ := unlockWithin(t, r.boot(), img); err != nil || !slices.Equal(by, []string{"vault"}) {
				t.Fatalf("with the TPM gone: opened by %v, %v; want vault", by, err)
			}
		})
	}
}

// Every factor of the policy must answer for its new share: any: [tpm,
// vault] with Vault refusing (a token Vault does not know) opens through
// the TPM, but is refused naming vault, classified as Vault's refusal;
// with the TPM gone, naming tpm; all: [tpm, vault] with Vault refusing
// cannot even give the old key. The image is byte-identical each time.
func TestReencryptPolicyFactorDownChangesNothing(t *testing.T) {
	s := vaulttest.Shared(t)
	for _, c := range []struct{ name, pol, factor string }{
		{"any-vault-refuses", "any: [tpm, vault]", "vault"},
		{"any-tpm-gone", "any: [tpm, vault]", "tpm"},
		{"all-vault-refuses", "all: [tpm, vault]", "vault"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sw := swtpmtest.Start(t)
			dir, yaml := policyConfig(t, s, nil, c.pol)
			yaml += "tpm:\n  device: " + sw.Device + "\n"
			m := withRecovery(vaultManager(t, dir, yaml, s.RootToken), config.RecoveryPrint)
			img, _ := formatted(t, m, "down")
			before := imageSum(t, img)
			if c.factor == "tpm" {
				// A fresh process: the TPM KEK is unsealed once per process.
				sw.Stop()
				m = withRecovery(vaultManager(t, dir, yaml, s.RootToken), config.RecoveryPrint)
			} else {
				// The same node with a Vault token Vault does not know: 403.
				m = withRecovery(vaultManager(t, dir, yaml, "hvs.not-a-token"), config.RecoveryPrint)
			}
			_, err := m.Reencrypt(t.Context(), find(t, m, img), ReencryptOptions{Show: func(*ReencryptResult) error { return nil }})
			if err == nil || !strings.Contains(err.Error(), c.factor) {
				t.Fatalf("reencrypt with %s down: %v; want an error naming %s", c.factor, err, c.factor)
			}
			k := Classify(err).Kind
			t.Logf("refused (%s): %v", k, err)
			if c.factor == "vault" && !k.IsKMS() || c.factor == "tpm" && k != KindTPMGone && k != KindNoTPM {
				t.Fatalf("classified %s, want the factor's own kind (its exit code): %v", k, err)
			}
			if imageSum(t, img) != before {
				t.Fatal("the refused reencrypt changed the image")
			}
		})
	}
}

// Crash injection at every write of the start and the end of a policy
// volume's re-encryption (any: [tpm, {all: [vault, local]}]): before the
// start commit (everything made, nothing written), after it, after a
// hotzone, after the last header write, inside the header backup's
// refresh. (Each commit is crash-safe at every 4 KiB page: pkg/luks2
// TestReencryptCrashAtEveryWrite.) After each: the old policy gives the
// old key and the new policy the new one (only the old before the start,
// only the new after the end), the recovery key shown opens (the new one
// both keys while under way), status names the re-encryption without
// calling it an unfinished rekey, cryptsetup reencrypt --resume-only with
// the new recovery key finishes a copy, which atrest then settles, and
// atrest reencrypt --resume finishes the original; both end with the
// plaintext intact under a new key.
func TestReencryptPolicyInterrupted(t *testing.T) {
	cs := testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	const pol, expr = "any: [tpm, {all: [vault, local]}]", "any(tpm,all(vault,local))"
	for _, point := range []string{"reencrypt-before-start", "reencrypt-after-start", "hotzone", "reencrypt-after-run", "backup-before-replace"} {
		t.Run(point, func(t *testing.T) {
			ctx := context.Background()
			rig, _, _, _ := nestedRig(t, pol, false)
			boot := func() *Manager { return withRecovery(rig(), config.RecoveryPrint) }
			m := boot()
			img, v, oldVK, oldRec, plain := policyBefore(t, m, "cut")
			oldSlots := v.Platform.Slots()
			var newRec *secret.Key
			o := ReencryptOptions{Hotzone: 1 << 20, Show: func(r *ReencryptResult) error { newRec = keyCopy(t, r.Recovery.Key); return nil }}
			if point == "hotzone" {
				o.Progress = func(done, total uint64) {
					if done > 0 {
						panic(crash("hotzone"))
					}
				}
			} else {
				armFailpoint(t, point)
			}
			if !crashed(func() { _, _ = m.Reencrypt(ctx, v, o) }) {
				t.Fatal("the crash point was not reached")
			}
			failpoint = func(string) {}
			m = boot()
			v = find(t, m, img)
			st, err := v.Header.Reencryption()
			if err != nil {
				t.Fatal(err)
			}
			if (st != nil) != (point == "reencrypt-after-start" || point == "hotzone") {
				t.Fatalf("after %s: in re-encryption %v", point, st)
			}
			switch {
			case point == "reencrypt-before-start":
				if !volumeKey(t, m, v).Equal(oldVK) || !recoveryOpens(t, v, oldRec) || len(v.Others) > 0 {
					t.Fatal("before the start commit: want the old policy and recovery key opening the old key, nothing added")
				}
			case st != nil:
				keys := keysOfTokens(t, m, v)
				var old, neu int
				for tok, vk := range keys {
					switch {
					case vk.Equal(oldVK) && tok.Policy.Expr == expr:
						old++
					case !vk.Equal(oldVK) && tok.Policy.Expr == expr:
						neu++
					}
				}
				if old != 1 || neu != 1 {
					t.Fatalf("in re-encryption: %d tokens give the old key, %d a new one; want one each", old, neu)
				}
				f, err := luks2.OpenFile(img, false)
				if err != nil {
					t.Fatal(err)
				}
				both, err := v.Header.OpenReencryptKeys(f, newRec)
				f.Close()
				if err != nil || !both.Old.Equal(oldVK) {
					t.Fatalf("the new recovery key does not give both keys: %v", err)
				}
				both.Wipe()
				if !recoveryOpens(t, v, oldRec) {
					t.Fatal("in re-encryption the old recovery key no longer opens its keyslot")
				}
				ps := problems(t, m, img)
				if !hasProblem(ps, "re-encryption is under way or was interrupted") || !hasProblem(ps, "atrest reencrypt cut") || hasProblem(ps, "extra platform") {
					t.Fatalf("status in re-encryption: %q", ps)
				}
				// Another change of the volume waits for the end.
				if _, err := m.SetPolicy(ctx, v, PolicySetOptions{Resume: true}); !errors.Is(err, ErrReencrypting) || find(t, m, img).Header.SeqID != v.Header.SeqID {
					t.Fatalf("policy set --resume in re-encryption: %v; want the re-encryption named, nothing written", err)
				}
				// cryptsetup finishes a copy with the recovery key alone.
				cp := filepath.Join(t.TempDir(), "copy.img")
				if b, err := os.ReadFile(img); err != nil || os.WriteFile(cp, b, 0o600) != nil {
					t.Fatal(err)
				}
				kf := filepath.Join(t.TempDir(), "rec")
				if err := os.WriteFile(kf, newRec.Bytes(), 0o600); err != nil {
					t.Fatal(err)
				}
				for _, args := range [][]string{{"repair"}, {"reencrypt", "--resume-only", "--force-offline-reencrypt"}} {
					args = append(append([]string{"--batch-mode"}, args...), "--key-file", kf, cp)
					if out, err := exec.Command(cs, args...).CombinedOutput(); err != nil {
						t.Fatalf("cryptsetup %v: %v\n%s", args, err, out)
					}
				}
				res, err := m.Reencrypt(ctx, find(t, m, cp), ReencryptOptions{Resume: true})
				if err != nil || !res.Resumed {
					t.Fatalf("atrest settling what cryptsetup finished: %+v %v", res, err)
				}
				cv := find(t, m, cp)
				if cv.Platform.Policy.Expr != expr || len(cv.Others) > 0 || len(cv.Unreadable) > 0 {
					t.Fatalf("after cryptsetup and the settling: %+v, %d others, %v unreadable", cv.Platform.Policy, len(cv.Others), cv.Unreadable)
				}
				if vk := volumeKey(t, m, cv); vk.Equal(oldVK) || sum(plainOf(t, m, cv)) != sum(plain) {
					t.Fatal("the copy cryptsetup finished: want a new key and the same plaintext")
				}
			default:
				if volumeKey(t, m, v).Equal(oldVK) || !recoveryOpens(t, v, newRec) {
					t.Fatal("after the end: want the new policy and recovery key opening a new key")
				}
			}
			if point == "reencrypt-before-start" {
				if res, err := m.Reencrypt(ctx, v, ReencryptOptions{Resume: true}); err != nil || !res.Unchanged || find(t, m, img).Header.SeqID != v.Header.SeqID {
					t.Fatalf("--resume with nothing to resume: %+v, %v; want unchanged, nothing written", res, err)
				}
				o = ReencryptOptions{Hotzone: 1 << 20, Show: func(r *ReencryptResult) error { newRec = keyCopy(t, r.Recovery.Key); return nil }}
			} else {
				o = ReencryptOptions{Resume: true}
			}
			res, err := m.Reencrypt(ctx, find(t, m, img), o)
			if err != nil {
				t.Fatalf("after %s: %v", point, err)
			}
			res.Recovery.Wipe()
			if res.Resumed != (point != "reencrypt-before-start") {
				t.Fatalf("after %s: resumed %v", point, res.Resumed)
			}
			policyReencrypted(t, m, img, expr, oldSlots, oldVK, oldRec, newRec, plain)
		})
	}
}

// A re-encryption cryptsetup started on a policy volume (reencrypt
// --init-only with one branch's secret) re-enrolled that branch only:
// atrest refuses to continue it with a usage error naming cryptsetup and
// policy set --recovery-key, before anything is written.
func TestReencryptRefusesAPolicyVolumeCryptsetupStarted(t *testing.T) {
	cs := testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	m := policyManager(t, vaulttest.Shared(t), nil, "any: [vault, local]")
	img, _ := formatted(t, m, "csstart")
	kf, slot := platformKeyFileSlot(t, m, find(t, m, img))
	if out, err := exec.Command(cs, "--batch-mode", "reencrypt", "--init-only", "--key-slot", fmt.Sprint(slot), "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", kf, img).CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup reencrypt --init-only: %v\n%s", err, out)
	}
	sum := imageSum(t, img)
	_, err := m.Reencrypt(t.Context(), find(t, m, img), ReencryptOptions{})
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "cryptsetup reencrypt --resume-only") || !strings.Contains(err.Error(), "policy set csstart --recovery-key") {
		t.Fatalf("reencrypt of a policy volume cryptsetup started: %v", err)
	}
	if imageSum(t, img) != sum {
		t.Fatal("the refused reencrypt changed the image")
	}
}
