package volume

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil/swtpmtest"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
)

// tpmVault starts a rig whose volumes are plain kms: vault-transit
// volumes on s (a fresh server when nil), with a software TPM (PCR 7
// measured, so policies bind to something) for their TPM keyslots; extra
// is appended to the configuration.
func tpmVault(t *testing.T, s *vaulttest.Server, extra string) (*Manager, tpmRig) {
	t.Helper()
	return tpmVaultPolicy(t, s, "", extra)
}

// tpmVaultPolicy is tpmVault with the fleet policy pol ("": none, the
// volumes are plain vault-transit ones).
func tpmVaultPolicy(t *testing.T, s *vaulttest.Server, pol, extra string) (*Manager, tpmRig) {
	t.Helper()
	if s == nil {
		s = vaulttest.Start(t)
	}
	r := tpmRig{sw: swtpmtest.Start(t), s: s}
	r.sw.ExtendPCR7(t)
	dir, yaml := policyConfig(t, r.s, nil, pol)
	// A stopped server takes its CA file with it; the next boot's
	// configuration must still load.
	ca, err := os.ReadFile(r.s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/ca.pem", ca, 0o600); err != nil {
		t.Fatal(err)
	}
	yaml = strings.Replace(yaml, r.s.CAFile, dir+"/ca.pem", 1)
	// A stopped server refuses connections, which the client retries
	// until the deadline: keep it short.
	yaml = strings.Replace(yaml, "timeout: 30s\n  deadline: 2m", "timeout: 2s\n  deadline: 2s", 1)
	if pol == "" {
		yaml = strings.Replace(yaml, "kms: local", "kms: vault-transit", 1)
		yaml = strings.Replace(yaml, "policy:\n", "", 1)
	}
	yaml += "tpm:\n  device: " + r.sw.Device + "\n" + extra
	r.boot = func() *Manager { return vaultManager(t, dir, yaml, r.s.RootToken) }
	return r.boot(), r
}

// enrolled formats a vault-transit volume and enrolls a TPM keyslot on
// PCR 7 (with pin, when given).
func enrolled(t *testing.T, m *Manager, name string, pin *secret.Key) string {
	t.Helper()
	img, _ := formatted(t, m, name)
	if v := find(t, m, img); v.Platform.KMS != "vault-transit" {
		t.Fatalf("the volume is under %q, want vault-transit", v.Platform.KMS)
	}
	if _, err := m.TPMEnroll(t.Context(), find(t, m, img), TPMOptions{PCRs: []int{7}, PIN: pin}); err != nil {
		t.Fatal(err)
	}
	return img
}

// testOpen runs Open --test on imgs.
func testOpen(t *testing.T, m *Manager, pin PINFunc, imgs ...string) []OpenResult {
	t.Helper()
	var vols []*Volume
	for _, img := range imgs {
		vols = append(vols, find(t, m, img))
	}
	return m.Open(t.Context(), vols, OpenOptions{Test: true, PIN: pin})
}

func pinOf(s string) PINFunc {
	return func(*Volume) (*secret.Key, error) { return secret.FromBytes([]byte(s)) }
}

// testPIN is a TPM PIN the test wipes at its end.
func testPIN(t *testing.T, pin string) *secret.Key {
	t.Helper()
	k, err := secret.FromBytes([]byte(pin))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

// With Vault stopped, volumes open through their TPM keyslots (one TPM
// connection for the batch), a PIN keyslot only with its PIN; what opened
// each is reported and recorded for status. After a PCR change with Vault
// still down the open fails as a PCR mismatch naming Vault's failure too,
// and nothing on the device changes.
func TestOpenThroughTPMKeyslotWhenKMSIsDown(t *testing.T) {
	m, r := tpmVault(t, nil, "")
	pin := testPIN(t, "1357")
	a, b, p := enrolled(t, m, "tpma", nil), enrolled(t, m, "tpmb", nil), enrolled(t, m, "tpmp", pin)
	for _, res := range testOpen(t, m, nil, a, b, p) {
		if res.Err != nil || !slices.Equal(res.By, []string{"vault-transit"}) {
			t.Fatalf("with Vault up %s opened by %v, %v; want vault-transit", res.Name, res.By, res.Err)
		}
	}

	r.s.Stop(t)
	m = r.boot()
	res := testOpen(t, m, nil, a, b, p)
	for _, res := range res[:2] {
		if res.Err != nil || !slices.Equal(res.By, []string{FactorTPMKeyslot}) {
			t.Fatalf("with Vault stopped %s opened by %v, %v; want its TPM keyslot", res.Name, res.By, res.Err)
		}
	}
	if err := res[2].Err; Classify(err).Kind != KindKMSUnavailable || !strings.Contains(err.Error(), "needs a PIN") {
		t.Fatalf("the PIN keyslot without a PIN: %v (%s); want Vault's failure and the PIN named", err, Classify(err).Kind)
	}
	if err := testOpen(t, m, pinOf("2468"), p)[0].Err; Classify(err).Kind != KindWrongPIN {
		t.Fatalf("a wrong PIN: %v (%s)", err, Classify(err).Kind)
	}
	if res := testOpen(t, m, pinOf("1357"), p)[0]; res.Err != nil || !slices.Equal(res.By, []string{FactorTPMKeyslot}) {
		t.Fatalf("with its PIN the PIN keyslot opened by %v, %v", res.By, res.Err)
	}
	st, errs := m.StatusOf(t.Context(), []string{a})
	// A test open changes nothing, not even the note of what opened the
	// volume last (TestLastUnlockOfABatch shows a real open's note).
	if len(errs) > 0 || st[0].LastUnlock != nil {
		t.Fatalf("a test open left a note of what opened the volume: %+v %v", st[0].LastUnlock, errs)
	}

	r.sw.ExtendPCR7(t)
	before := deviceBytes(t, a)
	err := testOpen(t, m, nil, a)[0].Err
	if Classify(err).Kind != KindPCRMismatch || !strings.Contains(err.Error(), "PCR") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("PCR changed and Vault down: %v (%s); want a PCR mismatch that names Vault's failure too", err, Classify(err).Kind)
	}
	if res, err := m.ResealAfterOpen(t.Context(), find(t, m, a), nil); res != nil || err != nil {
		t.Fatalf("a re-seal after a failed open: %+v %v", res, err)
	}
	if !bytes.Equal(before, deviceBytes(t, a)) {
		t.Fatal("the refused open changed the device")
	}
}

// A volume under all: [tpm, vault] with a TPM keyslot stays closed while
// Vault is down: the policy, not the keyslot, says what may open it.
func TestOpenKeepsPolicyWithTPMKeyslot(t *testing.T) {
	m, r := tpmVaultPolicy(t, nil, "all: [tpm, vault]", "")
	img, _ := formatted(t, m, "alltpm")
	if _, err := m.TPMEnroll(t.Context(), find(t, m, img), TPMOptions{PCRs: []int{7}}); err != nil {
		t.Fatal(err)
	}
	r.s.Stop(t)
	o := testOpen(t, r.boot(), nil, img)[0]
	var pe *PolicyError
	if !errors.As(o.Err, &pe) || pe.Missing["vault"] == nil || slices.Contains(o.By, FactorTPMKeyslot) {
		t.Fatalf("with Vault down: %v by %v; want the policy's refusal naming vault, not the TPM keyslot", o.Err, o.By)
	}
}

// After a PCR change, a volume Vault opened gets its TPM keyslot sealed
// again to today's values (the PIN keyslot is left, with a warning), and
// opens through it once Vault is gone. Opened by the TPM alone or by the
// local keystore nothing is re-sealed; tpm.reseal: never re-seals nothing.
func TestResealAfterOpenThroughVault(t *testing.T) {
	m, r := tpmVault(t, nil, "")
	pin := testPIN(t, "1357")
	img := enrolled(t, m, "resealme", nil)
	if _, err := m.TPMEnroll(t.Context(), find(t, m, img), TPMOptions{PCRs: []int{7}, PIN: pin}); err != nil {
		t.Fatal(err)
	}
	r.sw.ExtendPCR7(t)
	before := deviceBytes(t, img)
	for _, by := range [][]string{{FactorTPMKeyslot}, {"tpm"}, {"local"}, {"local", "tpm"}, nil} {
		if res, err := m.ResealAfterOpen(t.Context(), find(t, m, img), by); res != nil || err != nil {
			t.Fatalf("opened by %v: re-sealed %+v %v", by, res, err)
		}
	}
	if !bytes.Equal(before, deviceBytes(t, img)) {
		t.Fatal("a re-seal without a factor that vouches changed the device")
	}

	o := testOpen(t, m, nil, img)[0]
	if o.Err != nil || !slices.Equal(o.By, []string{"vault-transit"}) {
		t.Fatalf("open: %v by %v", o.Err, o.By)
	}
	res, err := m.ResealAfterOpen(t.Context(), find(t, m, img), o.By)
	if err != nil || res == nil || len(res.Added) != 1 || len(res.Removed) != 1 || res.Added[0].PIN {
		t.Fatalf("re-seal after Vault opened it: %+v %v; want the keyslot without a PIN replaced", res, err)
	}
	if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "--pin") }) {
		t.Fatalf("no warning about the PIN keyslot left stale: %v", res.Warnings)
	}
	for _, s := range m.tpmStatus(find(t, m, img).Header) {
		if s.PCRsMatch == nil || *s.PCRsMatch == s.PIN || !slices.Equal(s.PCRs, []int{7}) || s.Bank != "sha256" {
			t.Fatalf("after the re-seal: %+v; want the keyslot without a PIN matching, same PCRs and bank, the PIN one still stale", s)
		}
	}
	if res, err := m.ResealAfterOpen(t.Context(), find(t, m, img), o.By); res != nil || err != nil {
		t.Fatalf("a second re-seal found work: %+v %v", res, err)
	}

	r.s.Stop(t)
	if o := testOpen(t, r.boot(), nil, img)[0]; o.Err != nil || !slices.Equal(o.By, []string{FactorTPMKeyslot}) {
		t.Fatalf("with Vault gone after the re-seal: %v by %v; want the TPM keyslot", o.Err, o.By)
	}
}

// tpm.reseal: never leaves a stale TPM keyslot alone even when Vault
// opened the volume.
func TestResealNever(t *testing.T) {
	m, r := tpmVault(t, vaulttest.Shared(t), "  reseal: never\n")
	img := enrolled(t, m, "never", nil)
	r.sw.ExtendPCR7(t)
	before := deviceBytes(t, img)
	if res, err := m.ResealAfterOpen(t.Context(), find(t, m, img), []string{"vault-transit"}); res != nil || err != nil {
		t.Fatalf("tpm.reseal never re-sealed: %+v %v", res, err)
	}
	if !bytes.Equal(before, deviceBytes(t, img)) {
		t.Fatal("tpm.reseal never changed the device")
	}
}

// The operator's recovery key vouches too: with Vault gone and the PCRs
// changed, atrest tpm reseal --recovery seals the TPM keyslot again and
// the volume opens through it.
func TestTPMResealWithRecoveryKey(t *testing.T) {
	m, r := tpmVault(t, nil, "")
	img, rec := formattedWithKey(t, m, "recreseal")
	if _, err := m.TPMEnroll(t.Context(), find(t, m, img), TPMOptions{PCRs: []int{7}}); err != nil {
		t.Fatal(err)
	}
	r.s.Stop(t)
	r.sw.ExtendPCR7(t)
	m = r.boot()
	if _, err := m.TPMReseal(t.Context(), find(t, m, img), TPMResealOptions{}); Classify(err).Kind != KindKMSUnavailable {
		t.Fatalf("reseal through the stopped Vault: %v", err)
	}
	res, err := m.TPMReseal(t.Context(), find(t, m, img), TPMResealOptions{RecoveryKey: rec})
	if err != nil || len(res.Added) != 1 || len(res.Removed) != 1 {
		t.Fatalf("reseal with the recovery key: %+v %v", res, err)
	}
	if o := testOpen(t, m, nil, img)[0]; o.Err != nil || !slices.Equal(o.By, []string{FactorTPMKeyslot}) {
		t.Fatalf("after the reseal: %v by %v", o.Err, o.By)
	}
}

// tpmKeyslotsOpening counts v's TPM keyslots that unseal and open to the
// volume key, and reports whether every TPM keyslot does.
func tpmKeyslotsOpening(t *testing.T, m *Manager, v *Volume) (n int, all bool) {
	t.Helper()
	vk := volumeKey(t, m, v)
	f, err := luks2.OpenFile(v.Device, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids, _, _ := tpmTokens(v.Header)
	for _, id := range ids {
		probe := tpmSlot{id: id, device: m.cfg.TPM.Device}
		if probe.verify(v.Header, f, vk) == nil {
			n++
		}
	}
	return n, n == len(ids)
}

// A re-seal cut short at each of its steps: the volume still opens
// through the KMS, a TPM keyslot that opens the volume exists at every
// point, and the rerun ends with exactly one, matching today's PCRs.
func TestResealAfterOpenInterrupted(t *testing.T) {
	s := vaulttest.Shared(t)
	for _, point := range []string{"tpm-reseal-after-add", "tpm-reseal-after-verify", "tpm-reseal-after-remove"} {
		t.Run(point, func(t *testing.T) {
			m, r := tpmVault(t, s, "")
			img := enrolled(t, m, "crash", nil)
			r.sw.ExtendPCR7(t)
			armFailpoint(t, point)
			if !crashed(func() { _, _ = m.ResealAfterOpen(t.Context(), find(t, m, img), []string{"vault-transit"}) }) {
				t.Fatal("the failpoint was not reached")
			}
			v := find(t, m, img)
			if err := platformOpens(t, m, v); err != nil {
				t.Fatalf("after a crash at %s: %v", point, err)
			}
			matching := 0
			for _, s := range m.tpmStatus(v.Header) {
				if s.PCRsMatch != nil && *s.PCRsMatch {
					matching++
				}
			}
			if n, _ := tpmKeyslotsOpening(t, m, v); n == 0 || matching == 0 {
				t.Fatalf("after a crash at %s no TPM keyslot opens the volume (%d opening, %d matching)", point, n, matching)
			}
			failpoint = func(string) {}
			if _, err := m.ResealAfterOpen(t.Context(), v, []string{"vault-transit"}); err != nil {
				t.Fatal(err)
			}
			v = find(t, m, img)
			st := m.tpmStatus(v.Header)
			if len(st) != 1 || st[0].PCRsMatch == nil || !*st[0].PCRsMatch {
				t.Fatalf("after the rerun: %+v; want one TPM keyslot matching today's PCRs", st)
			}
			if _, all := tpmKeyslotsOpening(t, m, v); !all {
				t.Fatal("after the rerun the TPM keyslot does not open the volume")
			}
			// A crash after the last write leaves the header backup one
			// change behind, which status says until the next change.
			if ps := problems(t, m, img); len(ps) > 1 || len(ps) == 1 && (point != "tpm-reseal-after-remove" || !hasProblem(ps, "header backup is older")) {
				t.Fatalf("status: %v", ps)
			}
		})
	}
}

// When the TPM does not answer after Vault opened a volume with a TPM
// keyslot, the re-seal check cannot compare the PCRs: nothing is
// written, and the log says which keyslot went unchecked and why.
func TestResealAfterOpenSaysWhenTheTPMCannotBeAsked(t *testing.T) {
	m, r := tpmVault(t, vaulttest.Shared(t), "")
	img := enrolled(t, m, "unasked", nil)
	r.sw.Stop()
	var log bytes.Buffer
	m.log = slog.New(slog.NewJSONHandler(&log, nil))
	before := deviceBytes(t, img)
	if res, err := m.ResealAfterOpen(t.Context(), find(t, m, img), []string{"vault-transit"}); res != nil || err != nil {
		t.Fatalf("re-seal with no TPM answering: %+v %v", res, err)
	}
	if !bytes.Equal(before, deviceBytes(t, img)) {
		t.Fatal("a re-seal with no TPM answering changed the device")
	}
	if !strings.Contains(log.String(), `"msg":"TPM keyslot not checked against today's PCRs: not re-sealed"`) || !strings.Contains(log.String(), `"keyslot":`) {
		t.Fatalf("the log does not say the TPM keyslot went unchecked:\n%s", log.String())
	}
}
