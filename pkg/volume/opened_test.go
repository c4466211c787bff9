package volume

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// One unlock of several volumes records for each the factor that opened
// it, in one note file, and status shows it; a note an earlier version
// left in a file of its own is still shown.
func TestLastUnlockOfABatch(t *testing.T) {
	m := newTestManager(t)
	imgs := make([]string, 3)
	vols := make([]*Volume, 3)
	for i := range imgs {
		imgs[i], _ = formatted(t, m, "batch"+string(rune('a'+i)))
		vols[i] = find(t, m, imgs[i])
	}
	ctx := context.Background()
	st, errs := m.StatusOf(ctx, imgs)
	if len(errs) > 0 || st[0].LastUnlock != nil {
		t.Fatalf("status before any unlock: %+v %v", st[0].LastUnlock, errs)
	}
	keys, _, uerrs := m.unlockBy(ctx, vols)
	wipeAll(keys)
	for _, err := range uerrs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st, errs = m.StatusOf(ctx, imgs)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for i, s := range st {
		if s.LastUnlock == nil || !slices.Equal(s.LastUnlock.By, []string{"local"}) || time.Since(s.LastUnlock.At) > time.Minute {
			t.Fatalf("volume %d: last unlock %+v, want by local just now", i, s.LastUnlock)
		}
	}
	if ents, _ := os.ReadDir(m.cfg.StateDir); len(ents) == 0 {
		t.Fatal("no note file")
	}
	// An earlier version's note for a volume the new file does not know.
	if err := os.Remove(m.unlockNotesPath()); err != nil {
		t.Fatal(err)
	}
	legacy := m.legacyUnlockPath(vols[1].UUID())
	data, _ := json.Marshal(LastUnlock{By: []string{"vault"}, At: time.Now().UTC()})
	if err := os.MkdirAll(filepath.Dir(legacy), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(legacy, data, 0o600); err != nil {
		t.Fatal(err)
	}
	st, _ = m.StatusOf(ctx, imgs)
	if st[0].LastUnlock != nil || st[1].LastUnlock == nil || !slices.Equal(st[1].LastUnlock.By, []string{"vault"}) {
		t.Fatalf("after the upgrade: %+v, %+v", st[0].LastUnlock, st[1].LastUnlock)
	}
}
