package volume

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil/swtpmtest"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/tpm2"
)

// tpmRig is a policy Manager's parts: a software TPM for the tpm factor,
// a Vault server, and boot, which returns a fresh Manager over the same
// configuration and state: the next boot, which unseals the TPM KEK anew
// (a process keeps the KEK it unsealed).
type tpmRig struct {
	sw   *swtpmtest.TPM
	s    *vaulttest.Server
	boot func() *Manager
}

// tpmPolicy starts a rig whose fleet policy is pol (policyManager's
// configuration with a tpm section) and returns its first Manager.
func tpmPolicy(t testing.TB, pol string) (*Manager, tpmRig) {
	t.Helper()
	r := tpmRig{sw: swtpmtest.Start(t), s: vaulttest.Start(t)}
	dir, yaml := policyConfig(t, r.s, nil, pol)
	yaml += "tpm:\n  device: " + r.sw.Device + "\n"
	r.boot = func() *Manager { return vaultManager(t, dir, yaml, r.s.RootToken) }
	return r.boot(), r
}

// formattedWithKey formats a volume whose recovery key is shown (mode
// print) and returns the image and a copy of the key.
func formattedWithKey(t *testing.T, m *Manager, name string) (string, *secret.Key) {
	t.Helper()
	img := testImage(t)
	res, err := m.Format(t.Context(), FormatOptions{Device: img, Name: name, Recovery: config.RecoveryPrint})
	if err != nil {
		t.Fatal(err)
	}
	key := keyCopy(t, res.Recovery.Key)
	res.Recovery.Wipe()
	return img, key
}

// any: [tpm, vault] with Vault frozen opens through the TPM without
// waiting for Vault; with the TPM gone as well as Vault thawed, through
// Vault.
func TestPolicyAnyTPMOpensWhileVaultIsFrozen(t *testing.T) {
	m, r := tpmPolicy(t, "any: [tpm, vault]")
	img, _ := formatted(t, m, "anytpm")
	if v := find(t, m, img); v.Platform.Policy == nil || len(v.Platform.Slots()) != 2 {
		t.Fatalf("policy token %+v, want one keyslot per branch", v.Platform)
	}
	r.s.Freeze(t)
	m = r.boot()
	by, err, before := unlockWithin(t, m, img)
	if err != nil || !slices.Equal(by, []string{"tpm"}) {
		t.Fatalf("with vault frozen: opened by %v, %v; want tpm", by, err)
	}
	if !before {
		t.Fatal("the unlock waited for the frozen vault until the deadline")
	}
	r.s.Thaw(t)
	r.sw.Stop()
	m = r.boot()
	by, err, _ = unlockWithin(t, m, img)
	if err != nil || !slices.Equal(by, []string{"vault"}) {
		t.Fatalf("with the TPM gone: opened by %v, %v; want vault", by, err)
	}
	if ps := problems(t, m, img); !hasProblem(ps, "policy factor tpm is broken") {
		t.Fatalf("status with the TPM gone: %v; want tpm broken", ps)
	}
}

// all: [tpm, vault] after PCR 7 changed refuses, naming tpm and the PCR
// mismatch, and changes nothing on the device; the recovery key, outside
// the policy, still opens it, and status shows the tpm factor broken.
func TestPolicyAllTPMRefusesAfterPCRChange(t *testing.T) {
	m, r := tpmPolicy(t, "all: [tpm, vault]")
	img, rec := formattedWithKey(t, m, "alltpm")
	if by, err, _ := unlockWithin(t, r.boot(), img); err != nil || !slices.Equal(by, []string{"tpm", "vault"}) {
		t.Fatalf("all up: opened by %v, %v", by, err)
	}
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	r.sw.ExtendPCR7(t)
	m = r.boot()
	_, err, _ = unlockWithin(t, m, img)
	var pe *PolicyError
	if !errors.As(err, &pe) || !errors.Is(pe.Missing["tpm"], tpm2.ErrPCRMismatch) || pe.Missing["vault"] != nil {
		t.Fatalf("after the PCR change: %v; want a policy error naming tpm's PCR mismatch alone", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "missing tpm (") || !strings.Contains(msg, "PCR") {
		t.Fatalf("the message does not name tpm and the PCRs: %s", msg)
	}
	if k := Classify(err).Kind; k != KindPCRMismatch {
		t.Fatalf("classified %s, want %s", k, KindPCRMismatch)
	}
	after, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("the refused unlock changed the device")
	}
	if !recoveryOpens(t, find(t, m, img), rec) {
		t.Fatal("the recovery key does not open the volume after the PCR change")
	}
	if ps := problems(t, m, img); !hasProblem(ps, "policy factor tpm is broken") || !hasProblem(ps, "is not satisfied") {
		t.Fatalf("status after the PCR change: %v", ps)
	}
}

// threshold 2 of [tpm, vault, local] with the PCRs changed opens through
// vault and local.
func TestPolicyThresholdTPMPCRChangeOpensByOthers(t *testing.T) {
	m, r := tpmPolicy(t, "threshold: {k: 2, of: [tpm, vault, local]}")
	img, _ := formatted(t, m, "thrtpm")
	r.sw.ExtendPCR7(t)
	by, err, _ := unlockWithin(t, r.boot(), img)
	if err != nil || !slices.Equal(by, []string{"local", "vault"}) {
		t.Fatalf("after the PCR change: opened by %v, %v; want local and vault", by, err)
	}
}
