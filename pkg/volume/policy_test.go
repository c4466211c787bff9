package volume

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil/kmiptest"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms/backends"
	"github.com/atrest/atrest/pkg/policy"
	"github.com/atrest/atrest/pkg/token"
)

// policyManager is a Manager whose fleet policy is pol (YAML), over the
// local keystore, Vault server s (Transit, a 30 s call timeout) and, when
// k is not nil, KMIP server k.
func policyManager(t testing.TB, s *vaulttest.Server, k *kmiptest.Server, pol string) *Manager {
	t.Helper()
	dir, yaml := policyConfig(t, s, k, pol)
	return vaultManager(t, dir, yaml, s.RootToken)
}

// policyConfig is policyManager's configuration and the directory it is
// written for (a second Manager over it is the next boot).
func policyConfig(t testing.TB, s *vaulttest.Server, k *kmiptest.Server, pol string) (dir, yaml string) {
	t.Helper()
	n := vaulttest.Provision(t, s, "pol", nil)
	dir = t.TempDir()
	yaml = fmt.Sprintf(`kms: local
local:
  keystore: %s/kek
state_dir: %s/state
recovery:
  mode: none
vault:
  address: %s
  ca_file: %s
  timeout: 30s
  deadline: 2m
  auth:
    method: token
  transit:
    key: %s
policy:
  %s
`, dir, dir, s.Address, s.CAFile, n.Key, pol)
	if k != nil {
		yaml += fmt.Sprintf("kmip:\n  address: %s\n  server_name: %s\n  ca_file: %s\n  cert_file: %s\n  key_file: %s\n  key: atrest-pol\n",
			k.Address, k.ServerName, k.CA.File, k.Client.CertFile, k.Client.KeyFile)
	}
	return dir, yaml
}

// vaultManager is a Manager for the configuration yaml (written for dir)
// whose Vault token is token.
func vaultManager(t testing.TB, dir, yaml, token string) *Manager {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), filepath.Join(dir, "atrest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := backends.Open(cfg, func(k string) string {
		if k == "VAULT_TOKEN" {
			return token
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close() })
	return New(cfg, set, WithRunDir(filepath.Join(dir, "run")))
}

// unlockWithin unlocks the volume on img with a context whose deadline
// (5 s) is far shorter than Vault's call timeout (30 s): it returns the
// factors that opened it, the error, and whether the unlock returned
// before the deadline.
func unlockWithin(t *testing.T, m *Manager, img string) (by []string, err error, beforeDeadline bool) {
	t.Helper()
	v := find(t, m, img)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	keys, bys, errs := m.unlockBy(ctx, []*Volume{v})
	wipeAll(keys)
	return bys[0], errs[0], ctx.Err() == nil
}

// any: [vault, local] has one keyslot per factor; with Vault frozen (it
// accepts connections and never answers) the volume opens through the
// local keystore without waiting for Vault: the unlock returns before a
// deadline far shorter than Vault's timeout.
func TestPolicyAnyOpensWhileVaultIsFrozen(t *testing.T) {
	s := vaulttest.Start(t)
	m := policyManager(t, s, nil, "any: [vault, local]")
	img, res := formatted(t, m, "anyvol")
	v := find(t, m, img)
	if v.Platform.Policy == nil || len(v.Platform.Slots()) != 2 {
		t.Fatalf("policy token %+v, want one keyslot per branch", v.Platform)
	}
	if _, err, _ := unlockWithin(t, m, img); err != nil {
		t.Fatalf("open with every factor up: %v", err)
	}
	// status counts both keyslots as platform keyslots, not as a rekey
	// left half done, and asks no KMS about a "policy" backend.
	if ps := problems(t, m, img); hasProblem(ps, "extra platform") || hasProblem(ps, "kms:") {
		t.Fatalf("status of a policy volume: %v", ps)
	}
	s.Freeze(t)
	by, err, before := unlockWithin(t, m, img)
	if err != nil || !slices.Equal(by, []string{"local"}) {
		t.Fatalf("with vault frozen: opened by %v, %v; want local", by, err)
	}
	if !before {
		t.Fatal("the unlock waited for the frozen vault until the deadline")
	}
	// status names the factor that unlocked it last, and vault as broken.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, errs := m.StatusOf(ctx, []string{img})
	if len(errs) > 0 || st[0].LastUnlock == nil || !slices.Equal(st[0].LastUnlock.By, []string{"local"}) || !hasProblem(st[0].Problems, "policy factor vault is broken") {
		t.Fatalf("status after the unlock through local: %+v %v", st, errs)
	}
	_ = res
}

// all: [vault, local] opens only with both, and with Vault down refuses
// naming vault as the missing factor; a share replayed from an earlier
// generation of the volume (it unwraps fine: same volume, same KEK) is
// caught by its digest, never combined.
func TestPolicyAllNeedsEveryFactorAndChecksShares(t *testing.T) {
	s := vaulttest.Start(t)
	m := policyManager(t, s, nil, "all: [vault, local]")
	img, _ := formatted(t, m, "allvol")
	by, err, _ := unlockWithin(t, m, img)
	if err != nil || !slices.Equal(by, []string{"local", "vault"}) {
		t.Fatalf("all up: opened by %v, %v", by, err)
	}

	// Rekey gives every share a new secret; keep the old local share.
	old := find(t, m, img).Platform.Policy.Branches[0].Shares[1]
	if _, err := m.Rekey(context.Background(), find(t, m, img), RekeyOptions{}); err != nil {
		t.Fatal(err)
	}
	v := find(t, m, img)
	now := v.Platform.Policy.Branches[0].Shares[1]
	if now.Ciphertext == old.Ciphertext || now.Digest == old.Digest || len(v.Others) != 0 {
		t.Fatalf("rekey kept the share: %+v / %+v, others %d", old, now, len(v.Others))
	}
	if by, err, _ := unlockWithin(t, m, img); err != nil || len(by) != 2 {
		t.Fatalf("after rekey: %v %v", by, err)
	}
	replayed := *v.Platform
	pol := *v.Platform.Policy
	pol.Branches = slices.Clone(pol.Branches)
	pol.Branches[0].Shares = slices.Clone(pol.Branches[0].Shares)
	pol.Branches[0].Shares[1].Ciphertext, pol.Branches[0].Shares[1].KeyVersion = old.Ciphertext, old.KeyVersion
	replayed.Policy = &pol
	setTokenForTest(t, m, v, &replayed)
	_, err, _ = unlockWithin(t, m, img)
	var pe *PolicyError
	if !errors.As(err, &pe) || !errors.Is(err, policy.ErrShareMismatch) || pe.Missing["local"] == nil {
		t.Fatalf("replayed share: %v; want a policy error naming local's share mismatch", err)
	}
	setTokenForTest(t, m, find(t, m, img), v.Platform)

	s.Freeze(t)
	_, err, _ = unlockWithin(t, m, img)
	if !errors.As(err, &pe) || pe.Missing["vault"] == nil || !strings.Contains(err.Error(), "missing vault") {
		t.Fatalf("vault frozen: %v; want the policy error naming vault", err)
	}
}

// threshold 2 of [vault, kmip, local] opens with Vault frozen (kmip and
// local suffice, without waiting for Vault), and refuses with two down.
func TestPolicyThresholdTwoOfThree(t *testing.T) {
	k := kmiptest.Start(t)
	s := vaulttest.Start(t)
	m := policyManager(t, s, k, "threshold: {k: 2, of: [vault, kmip, local]}")
	img, _ := formatted(t, m, "thrvol")
	v := find(t, m, img)
	if len(v.Platform.Slots()) != 1 || len(v.Platform.Policy.Branches[0].Shares) != 3 {
		t.Fatalf("threshold token %+v: want one keyslot with three shares", v.Platform.Policy)
	}
	s.Freeze(t)
	by, err, before := unlockWithin(t, m, img)
	if err != nil || !slices.Equal(by, []string{"kmip", "local"}) || !before {
		t.Fatalf("vault frozen: opened by %v, %v (before the deadline: %v)", by, err, before)
	}
	k.Stop()
	_, err, _ = unlockWithin(t, m, img)
	var pe *PolicyError
	if !errors.As(err, &pe) || pe.Missing["kmip"] == nil {
		t.Fatalf("vault frozen and kmip stopped: %v", err)
	}
}

// setTokenForTest replaces v's platform token with tok in one commit.
func setTokenForTest(t *testing.T, m *Manager, v *Volume, tok *token.Token) {
	t.Helper()
	c, release, err := m.begin(context.Background(), v, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := c.setToken(context.Background(), c.v.TokenID, tok); err != nil {
		t.Fatal(err)
	}
}
