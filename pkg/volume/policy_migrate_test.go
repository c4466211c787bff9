package volume

import (
	"context"
	"slices"
	"testing"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/config"
)

// A volume made without a policy moves to the one the configuration now
// names with a rekey (the migration path docs/policy.md gives), and back:
// the old keyslots go, the new token opens, and the recovery key still
// opens whatever the policy.
func TestPolicyRekeyMigrates(t *testing.T) {
	s := vaulttest.Shared(t)
	m := withRecovery(policyManager(t, s, nil, "any: [{all: [vault, local]}, local]"), config.RecoveryPrint)
	fleet := m.cfg.Policy
	m.cfg.Policy = nil
	img, res := formatted(t, m, "migvol")
	shown := keyCopy(t, res.Recovery.Key)
	v := find(t, m, img)
	if v.Platform.Policy != nil {
		t.Fatalf("format without a policy made %+v", v.Platform.Policy)
	}
	oldSlot := v.Platform.Keyslot

	m.cfg.Policy = fleet
	if _, err := m.Rekey(context.Background(), v, RekeyOptions{}); err != nil {
		t.Fatal(err)
	}
	v = find(t, m, img)
	if v.Platform.Policy == nil || v.Platform.Policy.Expr != "any(all(vault,local),local)" || len(v.Platform.Slots()) != 2 || len(v.Others) != 0 {
		t.Fatalf("after rekey: %+v, others %d", v.Platform, len(v.Others))
	}
	if _, ok := v.Header.Keyslots[oldSlot]; ok && !slices.Contains(v.Platform.Slots(), oldSlot) {
		t.Fatalf("the old platform keyslot %d is still there", oldSlot)
	}
	if by, err, _ := unlockWithin(t, m, img); err != nil {
		t.Fatalf("policy volume opened by %v, %v", by, err)
	}
	if !recoveryOpens(t, v, shown) {
		t.Fatal("the recovery key no longer opens the volume under a policy")
	}

	m.cfg.Policy = nil
	if _, err := m.Rekey(context.Background(), v, RekeyOptions{}); err != nil {
		t.Fatal(err)
	}
	v = find(t, m, img)
	if v.Platform.Policy != nil || len(v.Header.Keyslots) != 2 {
		t.Fatalf("back to kms local: token %+v, %d keyslots (want platform and recovery: both policy keyslots gone)", v.Platform, len(v.Header.Keyslots))
	}
	if by, err, _ := unlockWithin(t, m, img); err != nil || !slices.Equal(by, []string{"local"}) {
		t.Fatalf("plain volume opened by %v, %v", by, err)
	}
}
