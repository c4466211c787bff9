package volume

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/atrest/atrest/pkg/kms/backends"
)

// rekey --all asks Vault a constant number of times, whatever the number
// of volumes (one wrap batch and one unwrap batch), where a rekey of each
// volume alone asks three times per volume (unwrap, wrap, verify); each
// volume ends with one platform keyslot, a new one, that opens through
// Vault, the old one gone; the outcomes come in the order of the volumes.
// A volume rekeyed by someone else after the batch read it (its token is
// not the one the batch unwrapped) is rekeyed all the same: its change
// asks Vault itself.
func TestRekeyEachAsksVaultInBatches(t *testing.T) {
	ctx := context.Background()
	cfg := benchConfig(t, "vault-transit", "rekeyeach")
	set, err := backends.Open(cfg, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close() })
	m := New(cfg, set, WithRunDir(t.TempDir()))
	volumes := func(n int) []*Volume {
		var vols []*Volume
		for i := range n {
			img, _ := formatted(t, m, fmt.Sprintf("rk%d-%d", n, i))
			vols = append(vols, find(t, m, img))
		}
		return vols
	}
	rekeyEach := func(vols []*Volume) int64 {
		t.Helper()
		before := vaultRequests(m)
		var order []string
		old := map[string]int{}
		for _, v := range vols {
			old[v.Name] = v.Platform.Keyslot
		}
		m.RekeyEach(ctx, vols, RekeyOptions{}, func(v *Volume, res *RekeyResult, err error) {
			order = append(order, v.Name)
			if err != nil {
				t.Fatalf("%s: %v", v.Name, err)
			}
			if res.OldKeyslot != old[v.Name] || res.NewKeyslot == res.OldKeyslot {
				t.Errorf("%s: keyslot %d -> %d, the volume had %d", v.Name, res.OldKeyslot, res.NewKeyslot, old[v.Name])
			}
		})
		asked := vaultRequests(m) - before
		var names []string
		for _, v := range vols {
			names = append(names, v.Name)
			after := find(t, m, v.Device)
			if err := platformOpens(t, m, after); err != nil {
				t.Errorf("%s does not open through Vault after the rekey: %v", v.Name, err)
			}
			if _, ok := after.Header.Keyslots[old[v.Name]]; ok || len(after.Others) > 0 || len(after.Header.Keyslots) != 1 {
				t.Errorf("%s after the rekey: keyslots %v, %d extra tokens; the old keyslot %d must be gone", v.Name, after.Header.Keyslots, len(after.Others), old[v.Name])
			}
		}
		if !slices.Equal(order, names) {
			t.Errorf("outcomes in the order %v, want %v", order, names)
		}
		return asked
	}
	one, five := rekeyEach(volumes(1)), rekeyEach(volumes(5))
	t.Logf("Vault requests of RekeyEach: %d for 1 volume, %d for 5", one, five)
	if one != five || five > 3 {
		t.Errorf("rekey of 1 volume asked Vault %d times, of 5 volumes %d times; want the same, at most 3", one, five)
	}
	vols := volumes(3)
	before := vaultRequests(m)
	for _, v := range vols {
		if _, err := m.Rekey(ctx, v, RekeyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	alone := vaultRequests(m) - before
	t.Logf("Vault requests of Rekey one by one: %d for 3 volumes", alone)
	if alone <= five {
		t.Errorf("3 rekeys one by one asked Vault %d times, no more than a batch of 5 (%d): the comparison proves nothing", alone, five)
	}
	// vols[1] was rekeyed behind the batch's back: the batch's view of
	// it is stale.
	stale := slices.Clone(vols)
	for i := range vols {
		vols[i] = find(t, m, vols[i].Device)
	}
	if _, err := m.Rekey(ctx, vols[1], RekeyOptions{}); err != nil {
		t.Fatal(err)
	}
	stale[0], stale[2] = vols[0], vols[2]
	n := 0
	m.RekeyEach(ctx, stale, RekeyOptions{}, func(v *Volume, res *RekeyResult, err error) {
		n++
		if err != nil {
			t.Errorf("%s, rekeyed since it was read: %v", v.Name, err)
		}
	})
	for _, v := range stale {
		if err := platformOpens(t, m, find(t, m, v.Device)); err != nil {
			t.Errorf("%s: %v", v.Name, err)
		}
	}
	if n != 3 {
		t.Errorf("%d outcomes for 3 volumes", n)
	}
}
