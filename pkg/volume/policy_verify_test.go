package volume

import (
	"context"
	"errors"
	"testing"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// A rekey whose new policy keyslots do not verify (Vault refuses the new
// vault share: its key's minimum decryption version moved past it) removes
// every keyslot it added, one per branch, not only the first: the header
// has the keyslots it had before.
func TestPolicyFailedVerifyRemovesEveryNewKeyslot(t *testing.T) {
	s := vaulttest.Start(t)
	m := policyManager(t, s, nil, "any: [local, vault]")
	img, _ := formatted(t, m, "verivol")
	v := find(t, m, img)
	slots := len(v.Header.Keyslots)
	key := "transit/keys/" + m.cfg.Vault.Transit.Key
	c := s.Client(t)
	prev := failpoint
	failpoint = func(name string) {
		if name != "rekey-after-add" {
			return
		}
		for range 2 {
			if _, err := c.Logical().Write(key+"/rotate", nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Logical().Write(key+"/config", map[string]any{"min_decryption_version": 3}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { failpoint = prev })
	_, err := m.Rekey(context.Background(), v, RekeyOptions{})
	if !errors.Is(err, ErrVerify) {
		t.Fatalf("rekey: %v, want a verification failure", err)
	}
	after := find(t, m, img)
	if len(after.Header.Keyslots) != slots || len(after.Others) != 0 {
		t.Fatalf("after the failed rekey: %d keyslots (had %d), %d extra tokens", len(after.Header.Keyslots), slots, len(after.Others))
	}
}
