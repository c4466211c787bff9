package volume

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestRewrapVerifiesInOneBatch: rewrapping several volumes costs one KMS
// rewrap call and one unwrap call for all of them (not one unwrap per
// volume to verify), every volume still opens through the KMS afterwards,
// and each keeps a header backup that status reports as current, with the
// one from before the change kept as .prev.
func TestRewrapVerifiesInOneBatch(t *testing.T) {
	m := newTestManager(t)
	calls := map[string]int{}
	m.observe = func(op string, _ time.Duration, _ error) { calls[op]++ }
	ctx := context.Background()
	var vols []*Volume
	for _, name := range []string{"rw0", "rw1", "rw2"} {
		img, _ := formatted(t, m, name)
		vols = append(vols, find(t, m, img))
	}
	clear(calls)
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
