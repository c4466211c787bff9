package volume

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/luks2"
)

// TestRewrapVerifiesInOneBatch: rewrapping several volumes costs one KMS
// rewrap call and one unwrap call for all of them (not one unwrap per
// volume to verify), every volume still opens through the KMS afterwards,
// and each keeps a header backup that status reports as current, with the
// one from before the change kept as .prev.
func TestRewrapVerifiesInOneBatch(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	calls, vols := countedVolumes(t, m, "rw0", "rw1", "rw2")
	for _, r := range m.Rewrap(ctx, vols, true) {
		if r.Err != nil || r.Skipped || len(r.Warnings) > 0 {
			t.Fatalf("%s: rewrap: err %v, skipped %v, warnings %v", r.Name, r.Err, r.Skipped, r.Warnings)
		}
	}
	if calls["rewrap"] != 1 || calls["unwrap"] != 1 {
		t.Fatalf("rewrap of %d volumes made KMS calls %v, want one rewrap and one unwrap", len(vols), calls)
	}
	for _, v := range vols {
		v = find(t, m, v.Device)
		if err := platformOpens(t, m, v); err != nil {
			t.Fatalf("%s does not open after the rewrap: %v", v.Name, err)
		}
		bi := m.backupInfo(ctx, v.Header)
		if !bi.Present || !bi.Current {
			t.Fatalf("%s: backup after the rewrap %+v, want present and current", v.Name, bi)
		}
		if _, err := os.Stat(bi.Path + ".prev"); err != nil {
			t.Fatalf("%s: no backup of the header before the rewrap: %v", v.Name, err)
		}
	}
}

// Rewrapping several policy volumes, and moving several volumes under
// another backend (rewrap --to), verifies all the new ciphertexts in one
// unwrap batch, not one unwrap per volume: policy rewrap makes one rewrap
// batch and one unwrap batch per KEK for all the volumes, rewrap --to one
// unwrap of the old tokens and one of the new; every volume opens through
// every branch afterwards.
func TestRewrapPolicyAndToVerifyInOneBatch(t *testing.T) {
	ctx := context.Background()
	s := vaulttest.Shared(t)
	m := policyManager(t, s, nil, "any: [{all: [vault, local]}, local]")
	calls, vols := countedVolumes(t, m, "pr0", "pr1", "pr2")
	for _, r := range m.Rewrap(ctx, vols, true) {
		if r.Err != nil || r.Skipped {
			t.Fatalf("%s: rewrap: err %v, skipped %v", r.Name, r.Err, r.Skipped)
		}
	}
	if calls["rewrap"] != 1 || calls["unwrap"] != 1 {
		t.Errorf("policy rewrap of %d volumes made KMS calls %v, want one rewrap and one unwrap (each one batch per KEK)", len(vols), calls)
	}
	for i, v := range vols {
		vols[i] = find(t, m, v.Device)
		if err := m.verifyToken(ctx, vols[i].Header, openDev(t, v.Device), vols[i].Platform, nil); err != nil {
			t.Errorf("%s: a branch does not open after the rewrap: %v", v.Name, err)
		}
	}

	// The local keystore's volumes, moved under Vault Transit.
	dir, yaml := policyConfig(t, s, nil, "local")
	lm := vaultManager(t, dir, yaml[:strings.Index(yaml, "policy:")], s.RootToken)
	calls, vols = countedVolumes(t, lm, "to0", "to1", "to2")
	to, err := lm.KMS().Target(config.BackendVaultTransit)
	if err != nil {
		t.Fatal(err)
	}
	clear(calls)
	for _, r := range lm.RewrapTo(ctx, vols, to) {
		if r.Err != nil || r.Skipped {
			t.Fatalf("%s: rewrap --to: err %v, skipped %v", r.Name, r.Err, r.Skipped)
		}
	}
	if calls["unwrap"] != 2 {
		t.Errorf("rewrap --to of %d volumes made KMS calls %v, want unwrap 2 (the old tokens, the new ones)", len(vols), calls)
	}
	for _, v := range vols {
		if v = find(t, lm, v.Device); v.Platform.KMS != config.BackendVaultTransit {
			t.Errorf("%s after rewrap --to: token of %s", v.Name, v.Platform.KMS)
		} else if err := platformOpens(t, lm, v); err != nil {
			t.Errorf("%s after rewrap --to: %v", v.Name, err)
		}
	}
}

// countedVolumes formats a volume of m for each name and returns them
// with a count of m's KMS calls by operation from then on.
func countedVolumes(t *testing.T, m *Manager, names ...string) (map[string]int, []*Volume) {
	t.Helper()
	var vols []*Volume
	for _, name := range names {
		img, _ := formatted(t, m, name)
		vols = append(vols, find(t, m, img))
	}
	calls := map[string]int{}
	m.observe = func(op string, _ time.Duration, _ error) { calls[op]++ }
	return calls, vols
}

// A header another tool changed between the scan that found a volume and
// its rewrap is the one the rewrap changes: the other tool's token stays,
// the new ciphertext is in, and the backup is of the header written (the
// rewrap reads the header under its lock; one still byte for byte as
// found is not parsed again, any other is).
func TestRewrapKeepsWhatAnotherToolWroteSinceTheScan(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	_, vols := countedVolumes(t, m, "rwo")
	v := vols[0]
	f, err := luks2.OpenFile(v.Device, true)
	if err != nil {
		t.Fatal(err)
	}
	h, err := luks2.Read(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	u, err := h.Begin()
	if err != nil {
		t.Fatal(err)
	}
	id, err := u.SetToken(luks2.AnyToken, []byte(`{"type":"systemd-fido2","keyslots":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(ctx, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r := m.Rewrap(ctx, vols, true)[0]
	if r.Err != nil || len(r.Warnings) > 0 {
		t.Fatalf("rewrap: %v, warnings %v", r.Err, r.Warnings)
	}
	after := find(t, m, v.Device)
	if tok := after.Header.Tokens[id]; tok == nil || tok.Type != "systemd-fido2" {
		t.Fatalf("the other tool's token %d is gone after the rewrap: tokens %v", id, after.Header.TokenIDs())
	}
	if after.Platform.Ciphertext == v.Platform.Ciphertext {
		t.Fatal("the rewrap did not replace the ciphertext")
	}
	if err := platformOpens(t, m, after); err != nil {
		t.Fatalf("does not open after the rewrap: %v", err)
	}
	if bi := m.backupInfo(ctx, after.Header); !bi.Current {
		t.Fatalf("backup after the rewrap: %+v, want current", bi)
	}
}

// A rewrapped secret is checked against its keyslot before its token is
// replaced: with one volume's platform keyslot area overwritten (its
// header as it was), that volume's rewrap is refused and its token left
// as it was, while the other volume of the batch is rewrapped and opens.
// The batch checks every keyslot before taking the volumes' locks; the
// one that failed there is checked again under its lock.
func TestRewrapRefusesASecretThatDoesNotOpen(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	_, vols := countedVolumes(t, m, "rwbad", "rwgood")
	bad := vols[0]
	area := bad.Header.Keyslots[bad.Platform.Keyslot].Area
	f, err := os.OpenFile(bad.Device, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(strings.Repeat("\xa5", int(area.Size))), int64(area.Offset)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	res := m.Rewrap(ctx, vols, true)
	if res[0].Err == nil || !strings.Contains(res[0].Err.Error(), "does not open keyslot") {
		t.Fatalf("rewrap of the volume whose keyslot was overwritten: %v, want a refusal naming the keyslot", res[0].Err)
	}
	if after := find(t, m, bad.Device); after.Platform.Ciphertext != bad.Platform.Ciphertext {
		t.Fatal("the refused rewrap replaced the token")
	}
	if res[1].Err != nil {
		t.Fatalf("rewrap of the other volume: %v", res[1].Err)
	}
	good := find(t, m, vols[1].Device)
	if good.Platform.Ciphertext == vols[1].Platform.Ciphertext {
		t.Fatal("the other volume's token was not rewrapped")
	}
	if err := platformOpens(t, m, good); err != nil {
		t.Fatalf("the other volume does not open after the rewrap: %v", err)
	}
}
