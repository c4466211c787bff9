package volume

import (
	"context"
	"testing"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/luks2"
)

// Rewrap moves each policy share to its own KEK's newest version: after
// the Transit key rotates, rewrap rewraps vault's share (and only it) in
// place, every branch still opens through its factors and status is quiet
// again.
func TestPolicyRewrapPerFactor(t *testing.T) {
	s := vaulttest.Start(t)
	m := policyManager(t, s, nil, "any: [{all: [vault, local]}, local]")
	img, _ := formatted(t, m, "rwvol")
	before := find(t, m, img).Platform.Policy
	if _, err := s.Client(t).Logical().Write("transit/keys/"+m.cfg.Vault.Transit.Key+"/rotate", nil); err != nil {
		t.Fatal(err)
	}
	res := m.Rewrap(context.Background(), []*Volume{find(t, m, img)}, false)
	if res[0].Err != nil || res[0].Skipped {
		t.Fatalf("rewrap: %+v", res[0])
	}
	after := find(t, m, img).Platform.Policy
	vaultShare, localShare := after.Branches[0].Shares[0], after.Branches[0].Shares[1]
	if vaultShare.KeyVersion != 2 || vaultShare.Ciphertext == before.Branches[0].Shares[0].Ciphertext ||
		localShare.Ciphertext != before.Branches[0].Shares[1].Ciphertext || after.Branches[1].Shares[0] != before.Branches[1].Shares[0] {
		t.Fatalf("rewrap changed %+v into %+v; want only vault's share moved to version 2", before, after)
	}
	if ps := problems(t, m, img); hasProblem(ps, "policy") {
		t.Fatalf("status after rewrap: %v", ps)
	}
	if err := platformOpens(t, m, find(t, m, img)); err != nil {
		t.Fatal(err)
	}
	v := find(t, m, img)
	// every branch opens through its own factors, vault's new share included
	if err := m.verifyToken(context.Background(), v.Header, openDev(t, img), v.Platform, nil); err != nil {
		t.Fatalf("a branch does not open after rewrap: %v", err)
	}
}

// openDev opens img for reading until the test ends.
func openDev(t *testing.T, img string) luks2.Reader {
	t.Helper()
	f, err := luks2.OpenFile(img, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
