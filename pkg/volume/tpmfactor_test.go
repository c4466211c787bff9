package volume

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/tpm"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/policy"
)

// tpmKEKOf is m's TPM-sealed KEK (the tpm factor's).
func tpmKEKOf(t *testing.T, m *Manager) *tpm.KEK {
	t.Helper()
	k, err := m.kms.For(kms.Wrapped{Backend: tpm.Backend})
	if err != nil {
		t.Fatal(err)
	}
	return k.(*tpm.KEK)
}

// staleKEKs lists the TPM-sealed KEKs kept after they no longer unsealed.
func staleKEKs(t *testing.T, m *Manager) []string {
	t.Helper()
	got, err := filepath.Glob(tpm.DefaultPath(m.cfg.StateDir) + ".stale-*")
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// everyFactorOpens reports whether every share of every branch of v's
// policy answers and every keyslot opens to the volume key: the tpm
// factor included.
func everyFactorOpens(t *testing.T, m *Manager, v *Volume) error {
	t.Helper()
	f, err := luks2.OpenFile(v.Device, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return m.verifyToken(t.Context(), v.Header, f, v.Platform, nil)
}

// any: [tpm, vault] after a PCR change opens through Vault, which vouches
// for the node: the TPM KEK is sealed anew to today's PCRs and the tpm
// branch enrolled under it, audited; once Vault is gone the volume opens
// through the TPM. A second call finds nothing to do.
func TestTPMFactorResealAfterPCRChange(t *testing.T) {
	m, r := tpmVaultPolicy(t, nil, "any: [tpm, vault]", "")
	img, _ := formatted(t, m, "anyreseal")
	r.sw.ExtendPCR7(t)
	m = r.boot()
	var log bytes.Buffer
	m.log = slog.New(slog.NewJSONHandler(&log, nil))
	o := testOpen(t, m, nil, img)[0]
	if o.Err != nil || !slices.Equal(o.By, []string{"vault"}) {
		t.Fatalf("after the PCR change: %v by %v; want vault", o.Err, o.By)
	}
	if ps := problems(t, m, img); !hasProblem(ps, "policy factor tpm is broken") {
		t.Fatalf("status after the PCR change: %v; want tpm broken", ps)
	}
	res, err := m.ResealAfterOpen(t.Context(), find(t, m, img), o.By)
	if err != nil || res == nil || !res.KEKRenewed || len(res.PolicyKeyslots) != 2 {
		t.Fatalf("re-seal after Vault opened it: %+v %v; want the KEK renewed and two new policy keyslots", res, err)
	}
	if st := staleKEKs(t, m); len(st) != 1 || st[0] != res.StaleKEK {
		t.Fatalf("stale KEKs %v, result says %q", st, res.StaleKEK)
	}
	for _, want := range []string{
		`"msg":"tpm-kek-reseal","audit":true,"op":"tpm-kek-reseal"`, `"result":"ok","trigger":"auto","factors":"vault","renewed":true`,
		`"msg":"tpm-factor-reseal","audit":true,"op":"tpm-factor-reseal"`,
		`"msg":"policy factor tpm re-sealed to today's PCR values"`,
	} {
		if !strings.Contains(log.String(), want) {
			t.Fatalf("the log has no %s:\n%s", want, log.String())
		}
	}
	v := find(t, m, img)
	if err := everyFactorOpens(t, m, v); err != nil || len(v.Others) != 0 || !slices.Equal(v.Platform.Slots(), res.PolicyKeyslots) {
		t.Fatalf("after the re-seal: %v (other tokens %d, keyslots %v)", err, len(v.Others), v.Platform.Slots())
	}
	if ps := problems(t, m, img); len(ps) != 0 {
		t.Fatalf("status after the re-seal: %v", ps)
	}
	before := deviceBytes(t, img)
	if res, err := m.ResealAfterOpen(t.Context(), v, o.By); res != nil || err != nil {
		t.Fatalf("a second re-seal found work: %+v %v", res, err)
	}
	if !bytes.Equal(before, deviceBytes(t, img)) {
		t.Fatal("a second re-seal changed the device")
	}
	if n := tpmKEKOf(t, m).Renewals(); n != 1 {
		t.Fatalf("%d KEK renewals, want 1", n)
	}

	r.s.Stop(t)
	if o := testOpen(t, r.boot(), nil, img)[0]; o.Err != nil || !slices.Equal(o.By, []string{"tpm"}) {
		t.Fatalf("with Vault gone after the re-seal: %v by %v; want tpm", o.Err, o.By)
	}
}

// Only factors that vouch trigger the re-seal, only tpm.reseal: auto
// allows it, and all: [tpm, vault], which needed the TPM, is not
// re-sealed even by a caller that claims Vault opened it: the device and
// the KEK file stay byte for byte.
func TestTPMFactorResealRefused(t *testing.T) {
	s := vaulttest.Shared(t)
	for _, tc := range []struct {
		name, pol, extra string
		by               [][]string
	}{
		{"never", "any: [tpm, vault]", "  reseal: never\n", [][]string{{"vault"}}},
		{"not-vouched", "any: [tpm, local]", "", [][]string{{"local"}, {"tpm"}, nil}},
		{"all-needs-tpm", "all: [tpm, vault]", "", [][]string{{"vault"}, nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, r := tpmVaultPolicy(t, s, tc.pol, tc.extra)
			img, _ := formatted(t, m, "refused")
			r.sw.ExtendPCR7(t)
			m = r.boot()
			if tc.name == "all-needs-tpm" {
				if o := testOpen(t, m, nil, img)[0]; o.Err == nil || Classify(o.Err).Kind != KindPCRMismatch {
					t.Fatalf("all: [tpm, vault] after the PCR change: %v by %v; want a PCR mismatch", o.Err, o.By)
				}
			}
			kekFile := tpm.DefaultPath(m.cfg.StateDir)
			kek, err := os.ReadFile(kekFile)
			if err != nil {
				t.Fatal(err)
			}
			before := deviceBytes(t, img)
			for _, by := range tc.by {
				res, _ := m.ResealAfterOpen(t.Context(), find(t, m, img), by)
				if res != nil {
					t.Fatalf("opened by %v: re-sealed %+v", by, res)
				}
			}
			if !bytes.Equal(before, deviceBytes(t, img)) {
				t.Fatal("the device changed")
			}
			if after, err := os.ReadFile(kekFile); err != nil || !bytes.Equal(kek, after) || len(staleKEKs(t, m)) != 0 {
				t.Fatalf("the TPM KEK changed (%v, stale %v)", err, staleKEKs(t, m))
			}
		})
	}
}

// Two volumes of one batch re-sealed after a PCR change cost one KEK
// renewal; a threshold policy whose other factors opened it is re-split.
func TestTPMFactorResealBatch(t *testing.T) {
	m, r := tpmVaultPolicy(t, vaulttest.Shared(t), "any: [tpm, vault]", "")
	a, _ := formatted(t, m, "batcha")
	b, _ := formatted(t, m, "batchb")
	r.sw.ExtendPCR7(t)
	m = r.boot()
	for _, o := range testOpen(t, m, nil, a, b) {
		if o.Err != nil || !slices.Equal(o.By, []string{"vault"}) {
			t.Fatalf("%s: %v by %v", o.Name, o.Err, o.By)
		}
		res, err := m.ResealAfterOpen(t.Context(), find(t, m, o.Device), o.By)
		if err != nil || res == nil || len(res.PolicyKeyslots) != 2 {
			t.Fatalf("%s: re-seal %+v %v", o.Name, res, err)
		}
	}
	if n, st := tpmKEKOf(t, m).Renewals(), staleKEKs(t, m); n != 1 || len(st) != 1 {
		t.Fatalf("%d KEK renewals, stale KEKs %v; want one", n, st)
	}
	for _, img := range []string{a, b} {
		if err := everyFactorOpens(t, m, find(t, m, img)); err != nil {
			t.Fatal(err)
		}
	}
}

// threshold 2 of [tpm, vault, local] opened by vault and local after a
// PCR change: its shares are split anew, the tpm one under the renewed
// KEK.
func TestTPMFactorResealThreshold(t *testing.T) {
	m, r := tpmVaultPolicy(t, vaulttest.Shared(t), "threshold: {k: 2, of: [tpm, vault, local]}", "")
	img, _ := formatted(t, m, "thrreseal")
	r.sw.ExtendPCR7(t)
	m = r.boot()
	o := testOpen(t, m, nil, img)[0]
	if o.Err != nil || !slices.Equal(o.By, []string{"local", "vault"}) {
		t.Fatalf("after the PCR change: %v by %v", o.Err, o.By)
	}
	res, err := m.ResealAfterOpen(t.Context(), find(t, m, img), o.By)
	if err != nil || res == nil || !res.KEKRenewed || len(res.PolicyKeyslots) != 1 {
		t.Fatalf("re-seal: %+v %v", res, err)
	}
	if err := everyFactorOpens(t, m, find(t, m, img)); err != nil {
		t.Fatalf("after the re-seal: %v", err)
	}
}

// A re-seal cut short at each of its writes (the KEK renewed, the
// journal, the new keyslots, their verification, the old ones removed,
// the journal cleared) and a KEK renewal cut short between moving the old
// file aside and writing the new one: the volume still opens through
// Vault, and the next open's re-seal, in a new process, finishes it: one
// policy token whose every factor opens, one stale KEK.
func TestTPMFactorResealInterrupted(t *testing.T) {
	s := vaulttest.Shared(t)
	points := []string{"mid-renew", opTPMFactor + "-after-renew", opTPMFactor + "-after-journal", opTPMFactor + "-after-add",
		opTPMFactor + "-after-verify", opTPMFactor + "-after-remove", opTPMFactor + "-after-clear"}
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			m, r := tpmVaultPolicy(t, s, "any: [tpm, vault]", "")
			img, _ := formatted(t, m, "crash")
			r.sw.ExtendPCR7(t)
			m = r.boot()
			if point == "mid-renew" {
				// What a crash inside Renew leaves: the old file moved
				// aside, no new one written yet.
				path := tpm.DefaultPath(m.cfg.StateDir)
				if err := os.Rename(path, tpm.StalePath(path, tpmKEKOf(t, m).Key())); err != nil {
					t.Fatal(err)
				}
				m = r.boot()
			} else {
				armFailpoint(t, point)
				if !crashed(func() { _, _ = m.ResealAfterOpen(t.Context(), find(t, m, img), []string{"vault"}) }) {
					t.Fatal("the failpoint was not reached")
				}
				failpoint = func(string) {}
				m = r.boot()
			}
			if err := platformOpens(t, m, find(t, m, img)); err != nil {
				t.Fatalf("after a crash at %s: %v", point, err)
			}
			journaled := !slices.Contains([]string{"mid-renew", opTPMFactor + "-after-renew", opTPMFactor + "-after-clear"}, point)
			if ps := problems(t, m, img); hasProblem(ps, "re-seal of the policy's tpm factor was interrupted") != journaled {
				t.Fatalf("status after a crash at %s: %v", point, ps)
			}
			o := testOpen(t, m, nil, img)[0]
			if o.Err != nil {
				t.Fatalf("open after a crash at %s: %v", point, o.Err)
			}
			if _, err := m.ResealAfterOpen(t.Context(), find(t, m, img), o.By); err != nil {
				t.Fatalf("the rerun (opened by %v): %v", o.By, err)
			}
			v := find(t, m, img)
			if err := everyFactorOpens(t, m, v); err != nil || len(v.Others) != 0 {
				t.Fatalf("after the rerun: %v (%d other tokens)", err, len(v.Others))
			}
			if j, err := m.readJournal(v.UUID()); j != nil || err != nil {
				t.Fatalf("after the rerun a journal is left: %+v %v", j, err)
			}
			if st := staleKEKs(t, m); len(st) != 1 {
				t.Fatalf("stale KEKs %v, want one", st)
			}
			// A crash after the last write leaves the header backup one
			// change behind, which status says until the next change.
			if ps := problems(t, m, img); len(ps) > 1 || len(ps) == 1 && !strings.Contains(ps[0], "header backup is older") {
				t.Fatalf("status after the rerun: %v", ps)
			}
		})
	}
}

// With pykmip as a third factor: threshold 2 of [tpm, vault, kmip] opened
// by kmip and vault after a PCR change has its shares split anew, the tpm
// one under the renewed KEK. A volume whose policy (any: [tpm, vault,
// kmip]) opens by Vault while KMIP is down is left as it is, with the
// error naming kmip (every factor must wrap its new share): it keeps
// opening through Vault (its tpm share, under the old KEK, is what the
// batch and crash tests show the next open re-enrols).
func TestTPMFactorResealKMIP(t *testing.T) {
	boot, sw, k, _ := nestedRig(t, "threshold: {k: 2, of: [tpm, vault, kmip]}", true)
	m := boot()
	a, _ := formatted(t, m, "thrkmip")
	b, _ := formatted(t, m, "anykmip")
	anyPol, err := policy.Parse("any: [tpm, vault, kmip]")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.SetPolicy(t.Context(), find(t, m, b), PolicySetOptions{Policy: anyPol}); err != nil {
		t.Fatal(err)
	}
	sw.ExtendPCR7(t)
	m = boot()
	o := testOpen(t, m, nil, a)[0]
	if o.Err != nil || !slices.Equal(o.By, []string{"kmip", "vault"}) {
		t.Fatalf("threshold after the PCR change: %v by %v; want kmip and vault", o.Err, o.By)
	}
	res, err := m.ResealAfterOpen(t.Context(), find(t, m, a), o.By)
	if err != nil || res == nil || !res.KEKRenewed || len(res.PolicyKeyslots) != 1 {
		t.Fatalf("re-seal of the threshold volume: %+v %v", res, err)
	}
	if err := everyFactorOpens(t, m, find(t, m, a)); err != nil {
		t.Fatalf("after the re-seal: %v", err)
	}

	k.Stop()
	m = boot()
	o = testOpen(t, m, nil, b)[0]
	if o.Err != nil || !slices.Equal(o.By, []string{"vault"}) {
		t.Fatalf("any with KMIP down: %v by %v; want vault", o.Err, o.By)
	}
	before := deviceBytes(t, b)
	res, err = m.ResealAfterOpen(t.Context(), find(t, m, b), o.By)
	if res != nil || err == nil || !strings.Contains(err.Error(), "kmip") {
		t.Fatalf("re-seal with KMIP down: %+v %v; want an error naming kmip", res, err)
	}
	if !bytes.Equal(before, deviceBytes(t, b)) {
		t.Fatal("the refused re-seal changed the device")
	}
	if err := platformOpens(t, m, find(t, m, b)); err != nil {
		t.Fatalf("after the refused re-seal: %v", err)
	}
	if ps := problems(t, m, b); !hasProblem(ps, "policy factor tpm is broken") || !hasProblem(ps, "which this node sealed anew") {
		t.Fatalf("status of the volume left under the old KEK: %v", ps)
	}
	if st := staleKEKs(t, m); len(st) != 1 {
		t.Fatalf("stale KEKs %v, want the one renewal", st)
	}
}

// all: [tpm, vault] after a PCR change does not open through its policy;
// atrest tpm reseal --recovery (the operator's recovery key vouches)
// re-seals its tpm factor, Vault wrapping its new share, and the volume
// opens through tpm and vault again. A wrong recovery key changes
// nothing, the KEK file included.
func TestTPMFactorResealWithRecoveryKey(t *testing.T) {
	m, r := tpmVaultPolicy(t, vaulttest.Shared(t), "all: [tpm, vault]", "  reseal: never\n")
	img, rec := formattedWithKey(t, m, "allrec")
	r.sw.ExtendPCR7(t)
	m = r.boot()
	kek, err := os.ReadFile(tpm.DefaultPath(m.cfg.StateDir))
	if err != nil {
		t.Fatal(err)
	}
	before := deviceBytes(t, img)
	wrong := testPIN(t, "not-the-recovery-key")
	if _, err := m.TPMReseal(t.Context(), find(t, m, img), TPMResealOptions{RecoveryKey: wrong}); err == nil {
		t.Fatal("a wrong recovery key re-sealed")
	}
	if after, _ := os.ReadFile(tpm.DefaultPath(m.cfg.StateDir)); !bytes.Equal(before, deviceBytes(t, img)) || !bytes.Equal(kek, after) {
		t.Fatal("a wrong recovery key changed the device or the KEK")
	}
	anyPol, err := policy.Parse("any: [tpm, vault]")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.SetPolicy(t.Context(), find(t, m, img), PolicySetOptions{Policy: anyPol, Key: rec}); err == nil || !strings.Contains(err.Error(), "tpm") {
		t.Fatalf("policy set to a policy with tpm before the KEK is sealed anew: %v; want a refusal naming tpm", err)
	}
	res, err := m.TPMReseal(t.Context(), find(t, m, img), TPMResealOptions{RecoveryKey: rec})
	if err != nil || !res.KEKRenewed || len(res.PolicyKeyslots) != 1 {
		t.Fatalf("tpm reseal --recovery: %+v %v", res, err)
	}
	m = r.boot()
	if by, err, _ := unlockWithin(t, m, img); err != nil || !slices.Equal(by, []string{"tpm", "vault"}) {
		t.Fatalf("after the re-seal: opened by %v, %v; want tpm and vault", by, err)
	}
	// Now that the KEK is sealed to today's PCRs, policy set moves to
	// another policy with tpm through the policy itself.
	if _, err := m.SetPolicy(t.Context(), find(t, m, img), PolicySetOptions{Policy: anyPol}); err != nil {
		t.Fatalf("policy set to any: [tpm, vault] after the re-seal: %v", err)
	}
	if err := everyFactorOpens(t, m, find(t, m, img)); err != nil {
		t.Fatal(err)
	}
}
