package volume

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/atrest/atrest/internal/testutil/kmiptest"
	"github.com/atrest/atrest/internal/testutil/swtpmtest"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// nestedRig is a policy node with every factor real: swtpm, a Vault
// server, the local keystore in dir and, with kmip, pykmip-server. boot
// returns a fresh Manager over its configuration and state (the next
// boot: the TPM KEK and the local keystore are read anew).
func nestedRig(t *testing.T, pol string, kmip bool) (boot func() *Manager, sw *swtpmtest.TPM, k *kmiptest.Server, dir string) {
	t.Helper()
	sw = swtpmtest.Start(t)
	s := vaulttest.Shared(t)
	if kmip {
		k = kmiptest.Start(t)
	}
	dir, yaml := policyConfig(t, s, k, pol)
	if kmip {
		// The kmip section is last: a stopped server is given up on
		// after a second, not after the default minute of retries.
		yaml += "  timeout: 1s\n  deadline: 1s\n"
	}
	yaml += "tpm:\n  device: " + sw.Device + "\n"
	return func() *Manager { return vaultManager(t, dir, yaml, s.RootToken) }, sw, k, dir
}

// An any inside an all, all: [{any: [tpm, kmip]}, vault]: one keyslot per
// choice from the any (tpm+vault, kmip+vault). It opens with either of
// tpm and kmip gone, never without Vault's share, and with both tpm (its
// PCRs changed) and kmip gone it refuses naming both, the device as it
// was.
func TestPolicyAnyInsideAll(t *testing.T) {
	boot, sw, k, _ := nestedRig(t, "all: [{any: [tpm, kmip]}, vault]", true)
	m := boot()
	img, _ := formatted(t, m, "anyinall")
	v := find(t, m, img)
	if v.Platform.Policy.Expr != "all(any(tpm,kmip),vault)" || len(v.Platform.Slots()) != 2 {
		t.Fatalf("token %+v: want two keyslots, tpm+vault and kmip+vault", v.Platform.Policy)
	}
	if err := platformOpens(t, m, v); err != nil {
		t.Fatalf("every factor up: %v", err)
	}
	sw.ExtendPCR7(t)
	if by, err, _ := unlockWithin(t, boot(), img); err != nil || !slices.Equal(by, []string{"kmip", "vault"}) {
		t.Fatalf("tpm's PCRs changed: opened by %v, %v; want kmip and vault", by, err)
	}
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	k.Stop()
	m = boot()
	_, err, _ = unlockWithin(t, m, img)
	var pe *PolicyError
	if !errors.As(err, &pe) || pe.Missing["tpm"] == nil || pe.Missing["kmip"] == nil || pe.Missing["vault"] != nil {
		t.Fatalf("tpm and kmip gone: %v; want a policy error naming tpm and kmip, not vault", err)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Fatal("the refused unlock changed the device")
	}
	if ps := problems(t, m, img); !hasProblem(ps, "is not satisfied") {
		t.Fatalf("status with tpm and kmip gone: %v", ps)
	}
}

// An all inside an any written as the issue writes it, without braces:
// any: [all: [tpm, vault], local]. With the local keystore gone it opens
// through tpm and vault; with the PCRs changed as well it refuses naming
// local and tpm.
func TestPolicyAllInsideAnyAsWritten(t *testing.T) {
	boot, sw, _, dir := nestedRig(t, "any: [all: [tpm, vault], local]", false)
	m := boot()
	img, _ := formatted(t, m, "allinany")
	if v := find(t, m, img); v.Platform.Policy.Expr != "any(all(tpm,vault),local)" || len(v.Platform.Slots()) != 2 {
		t.Fatalf("token %+v", v.Platform.Policy)
	}
	if err := os.Rename(filepath.Join(dir, "kek"), filepath.Join(dir, "kek.gone")); err != nil {
		t.Fatal(err)
	}
	if by, err, _ := unlockWithin(t, boot(), img); err != nil || !slices.Equal(by, []string{"tpm", "vault"}) {
		t.Fatalf("local keystore gone: opened by %v, %v; want tpm and vault", by, err)
	}
	sw.ExtendPCR7(t)
	_, err, _ := unlockWithin(t, boot(), img)
	var pe *PolicyError
	if !errors.As(err, &pe) || pe.Missing["local"] == nil || pe.Missing["tpm"] == nil {
		t.Fatalf("local gone and PCRs changed: %v; want a policy error naming local and tpm", err)
	}
}
