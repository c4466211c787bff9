package volume

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/policy"
	"github.com/atrest/atrest/pkg/secret"
)

func mustPolicy(t *testing.T, text string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// policyVolume formats a volume under pol ("": the kms: backend alone,
// local), returning the image, the volume and its recovery key (nil
// unless the Manager's recovery mode is print).
func policyVolume(t *testing.T, m *Manager, name, pol string) (string, *Volume, *secret.Key) {
	t.Helper()
	fleet := m.cfg.Policy
	m.cfg.Policy = nil
	if pol != "" {
		m.cfg.Policy = mustPolicy(t, pol)
	}
	defer func() { m.cfg.Policy = fleet }()
	img, res := formatted(t, m, name)
	var key *secret.Key
	if res.Recovery != nil && res.Recovery.Key != nil {
		key = keyCopy(t, res.Recovery.Key)
	}
	return img, find(t, m, img), key
}

// policySetOpens checks what a user relies on after a policy set: one
// platform token under want ("": none), the old platform keyslots gone,
// every keyslot opening through all its shares, the recovery key still
// opening, no journal and a healthy status.
func policySetOpens(t *testing.T, m *Manager, img, want string, old []int, recovery []int) *Volume {
	t.Helper()
	v := find(t, m, img)
	got := ""
	if v.Platform.Policy != nil {
		got = v.Platform.Policy.Expr
	}
	if got != want || len(v.Others) != 0 {
		t.Fatalf("policy %q with %d extra tokens, want %q and none", got, len(v.Others), want)
	}
	for _, s := range old {
		if !slices.Contains(v.Platform.Slots(), s) && !slices.Contains(recovery, s) {
			if _, ok := v.Header.Keyslots[s]; ok {
				t.Fatalf("the old platform keyslot %d is still there", s)
			}
		}
	}
	if !slices.Equal(v.Recovery, recovery) {
		t.Fatalf("recovery keyslots %v, want them untouched: %v", v.Recovery, recovery)
	}
	if n := len(v.Platform.Slots()) + len(recovery); len(v.Header.Keyslots) != n {
		t.Fatalf("%d keyslots, want %d (the new policy's and the recovery keyslot)", len(v.Header.Keyslots), n)
	}
	f, err := luks2.OpenFile(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := m.verifyToken(context.Background(), v.Header, f, v.Platform, nil); err != nil {
		t.Fatalf("a keyslot of the new policy does not open through its shares: %v", err)
	}
	if journalLeft(t, m, v.UUID()) {
		t.Fatal("a journal is left after policy set")
	}
	if ps := problems(t, m, img); len(ps) > 0 {
		t.Fatalf("status after policy set: %v", ps)
	}
	return v
}

// A plain volume moves to all: [vault, local], to any: [vault, local] and
// back to the kms: backend alone; each time the new keyslots open, the
// old ones are gone, the recovery keyslot is the same and opens, and a
// second run with the same policy changes nothing.
func TestPolicySetMoves(t *testing.T) {
	s := vaulttest.Shared(t)
	m := withRecovery(policyManager(t, s, nil, "local"), config.RecoveryPrint)
	ctx := context.Background()
	img, v, key := policyVolume(t, m, "setvol", "")
	rec := slices.Clone(v.Recovery)
	for _, step := range []struct{ text, expr string }{
		{"all: [vault, local]", "all(vault,local)"},
		{"any: [vault, local]", "any(vault,local)"},
		{"", ""},
	} {
		var p *policy.Policy
		if step.text != "" {
			p = mustPolicy(t, step.text)
		}
		old := find(t, m, img).Platform.Slots()
		res, err := m.SetPolicy(ctx, find(t, m, img), PolicySetOptions{Policy: p})
		if err != nil {
			t.Fatalf("policy set %q: %v", step.text, err)
		}
		if res.Unchanged || res.To.Policy != step.expr || !slices.Equal(res.From.Keyslots, old) {
			t.Fatalf("policy set %q: %+v", step.text, res)
		}
		v = policySetOpens(t, m, img, step.expr, old, rec)
		if !recoveryOpens(t, v, key) {
			t.Fatalf("after policy set %q the recovery key does not open", step.text)
		}
		if by, err, _ := unlockWithin(t, m, img); err != nil {
			t.Fatalf("after policy set %q: open: %v", step.text, err)
		} else if step.expr == "all(vault,local)" && !slices.Equal(by, []string{"local", "vault"}) {
			t.Fatalf("all(vault,local) opened by %v", by)
		}
		seq := v.Header.SeqID
		again, err := m.SetPolicy(ctx, v, PolicySetOptions{Policy: p})
		if err != nil || !again.Unchanged || find(t, m, img).Header.SeqID != seq {
			t.Fatalf("the same policy again: %+v, %v; want unchanged and no header write", again, err)
		}
	}
	if v.Platform.KMS != "local" {
		t.Fatalf("back to no policy: token under %q, want local (kms:)", v.Platform.KMS)
	}
}

// A factor that refuses stops the change before anything is written,
// and the error names it: a new policy's factor that cannot wrap its
// share, and an old policy its factors no longer satisfy.
func TestPolicySetFactorDownChangesNothing(t *testing.T) {
	s := vaulttest.Shared(t)
	dir, yaml := policyConfig(t, s, nil, "local")
	m := vaultManager(t, dir, yaml, s.RootToken)
	ctx := context.Background()
	for _, c := range []struct{ name, from, to string }{
		{"new factor", "", "all: [vault, local]"},
		{"old factor", "all: [vault, local]", "local"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img, v, _ := policyVolume(t, m, "down", c.from)
			// The same node with a Vault token Vault does not know: 403.
			denied := vaultManager(t, dir, yaml, "hvs.not-a-token")
			_, err := denied.SetPolicy(ctx, find(t, denied, img), PolicySetOptions{Policy: mustPolicy(t, c.to)})
			if err == nil || !strings.Contains(err.Error(), "vault") || !errors.Is(err, kms.ErrAuth) && !errors.Is(err, kms.ErrPermissionDenied) {
				t.Fatalf("policy set with vault refusing: %v; want an error naming vault, classified as the KMS's refusal", err)
			}
			if k := Classify(err).Kind; !k.IsKMS() {
				t.Fatalf("classified %s, want a KMS kind (its exit code)", k)
			}
			after := find(t, m, img)
			if after.Header.SeqID != v.Header.SeqID || journalLeft(t, m, v.UUID()) {
				t.Fatalf("the refused policy set wrote: seqid %d -> %d, journal %v", v.Header.SeqID, after.Header.SeqID, journalLeft(t, m, v.UUID()))
			}
			if err := platformOpens(t, m, after); err != nil {
				t.Fatalf("the volume no longer opens: %v", err)
			}
		})
	}
}

// A policy that names a factor this configuration has not got, or has a
// bad shape, is refused before the volume is touched.
func TestPolicySetRefusesInvalidPolicy(t *testing.T) {
	m := newTestManager(t)
	img, v, _ := policyVolume(t, m, "inval", "")
	for _, text := range []string{"any: [local, nosuch]", "threshold: {k: 3, of: [local, vault]}"} {
		_, err := m.SetPolicy(context.Background(), v, PolicySetOptions{Policy: mustPolicy(t, text)})
		if !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("policy set %q: %v, want a usage error", text, err)
		}
		if find(t, m, img).Header.SeqID != v.Header.SeqID {
			t.Fatalf("policy set %q wrote the header", text)
		}
	}
}

// Crash injection at every write of policy set, both ways (onto a policy
// with a split branch, and back to the kms: backend): the journal, the
// header commit that adds the new keyslots, the journal update, the
// commit that removes the old ones, the journal's removal and the header
// backup. (Each header commit is itself crash-safe at every byte:
// pkg/luks2 TestCrashSafety.) After each crash the volume opens through
// the old or the new policy and with its recovery key, status names the
// unfinished change with the command that finishes it, and that command
// finishes it.
func TestPolicySetInterrupted(t *testing.T) {
	s := vaulttest.Shared(t)
	points := []string{"policy-set-after-journal", "policy-set-after-add", "policy-set-after-verify",
		"policy-set-after-remove", "policy-set-after-clear", "backup-before-replace"}
	for _, dir := range []struct{ name, from, to, expr string }{
		{"onto", "", "any: [{all: [vault, local]}, local]", "any(all(vault,local),local)"},
		{"off", "any: [{all: [vault, local]}, local]", "", ""},
	} {
		for _, point := range points {
			t.Run(dir.name+"/"+point, func(t *testing.T) {
				ctx := context.Background()
				m := withRecovery(policyManager(t, s, nil, "local"), config.RecoveryPrint)
				img, v, key := policyVolume(t, m, "crash", dir.from)
				rec, old := slices.Clone(v.Recovery), v.Platform.Slots()
				var p *policy.Policy
				if dir.to != "" {
					p = mustPolicy(t, dir.to)
				}
				armFailpoint(t, point)
				if !crashed(func() { _, _ = m.SetPolicy(ctx, find(t, m, img), PolicySetOptions{Policy: p}) }) {
					t.Fatal("the failpoint was not reached")
				}
				v = find(t, m, img)
				if err := platformOpens(t, m, v); err != nil {
					t.Fatalf("after a crash at %s the volume does not open through its policy: %v", point, err)
				}
				if !recoveryOpens(t, v, key) {
					t.Fatalf("after a crash at %s the recovery key does not open", point)
				}
				if len(v.Others) > 0 || journalLeft(t, m, v.UUID()) {
					if ps := problems(t, m, img); !hasProblem(ps, "atrest policy set "+v.Ref()+" --resume") {
						t.Fatalf("status after a crash at %s: %v; want the command that finishes it", point, ps)
					}
				}
				failpoint = func(string) {}
				res, err := m.SetPolicy(ctx, v, PolicySetOptions{Resume: true})
				if err != nil {
					t.Fatalf("policy set --resume: %v", err)
				}
				// What the resume says it did: a change cut short
				// before its new keyslots reached the device is rolled
				// back, every later one completed.
				wantResumed := "completed"
				switch point {
				case "policy-set-after-journal":
					wantResumed = "rolled back"
				case "policy-set-after-clear", "backup-before-replace":
					wantResumed = "" // nothing left but the header backup
				}
				if res.Resumed != wantResumed {
					t.Fatalf("the resume says %q, want %q", res.Resumed, wantResumed)
				}
				// Cut short before its new keyslots were written, the
				// change is not on the device: the old policy stands and
				// policy set runs it again. Anything later, the resume
				// alone completed it.
				want := dir.expr
				if point == "policy-set-after-journal" {
					want = ""
					if dir.from != "" {
						want = mustPolicy(t, dir.from).String()
					}
				}
				policySetOpens(t, m, img, want, nil, rec)
				again, err := m.SetPolicy(ctx, find(t, m, img), PolicySetOptions{Policy: p})
				if err != nil {
					t.Fatalf("policy set again: %v", err)
				}
				if again.Unchanged != (want == dir.expr) {
					t.Fatalf("policy set again after the resume: %+v", again)
				}
				v = policySetOpens(t, m, img, dir.expr, old, rec)
				if !recoveryOpens(t, v, key) {
					t.Fatal("after the resumed policy set the recovery key does not open")
				}
			})
		}
	}
}

// An old policy whose factors cannot satisfy it any more (all: [vault,
// local] with the local keystore gone) refuses naming local; with the
// recovery key the volume moves to the new policy, which then opens it.
// A wrong key is refused and changes nothing.
func TestPolicySetWithRecoveryKey(t *testing.T) {
	s := vaulttest.Shared(t)
	dir, yaml := policyConfig(t, s, nil, "local")
	m := withRecovery(vaultManager(t, dir, yaml, s.RootToken), config.RecoveryPrint)
	ctx := context.Background()
	img, v, key := policyVolume(t, m, "lostlocal", "all: [vault, local]")
	if err := os.Rename(filepath.Join(dir, "kek"), filepath.Join(dir, "kek.lost")); err != nil {
		t.Fatal(err)
	}
	m = withRecovery(vaultManager(t, dir, yaml, s.RootToken), config.RecoveryPrint)
	to := mustPolicy(t, "vault")
	var pe *PolicyError
	if _, err := m.SetPolicy(ctx, find(t, m, img), PolicySetOptions{Policy: to}); !errors.As(err, &pe) || pe.Missing["local"] == nil {
		t.Fatalf("without the recovery key: %v; want the policy error naming local", err)
	}
	wrong, err := secret.FromBytes([]byte("not-the-recovery-key"))
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Wipe()
	if _, err := m.SetPolicy(ctx, find(t, m, img), PolicySetOptions{Policy: to, Key: wrong}); Classify(err).Kind != KindKeyRejected {
		t.Fatalf("a wrong key: %v, want it rejected", err)
	}
	if find(t, m, img).Header.SeqID != v.Header.SeqID {
		t.Fatal("a refused policy set wrote the header")
	}
	if _, err := m.SetPolicy(ctx, find(t, m, img), PolicySetOptions{Policy: to, Key: key}); err != nil {
		t.Fatalf("with the recovery key: %v", err)
	}
	v = policySetOpens(t, m, img, "vault", v.Platform.Slots(), v.Recovery)
	if !recoveryOpens(t, v, key) {
		t.Fatal("the recovery key no longer opens the volume")
	}
}
