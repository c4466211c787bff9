package volume

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/internal/testutil/tokenedit"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/token"
)

// A backup refresh interrupted at each of its steps (the reuse of the
// spare file, the write, each link and rename) never leaves the state
// directory without a complete backup of the header before the change
// as <uuid>.luks2, nor without the .prev one it had: both read as valid
// headers whose platform keyslot opens through the KMS. The crash comes
// at the first refresh after format (nothing to reuse), the second (a
// .prev, no spare yet) and later ones (the spare reused), and the next
// refresh after it leaves a current backup, the one before as .prev, no
// temporary file and an empty spare, also when the temporary file is gone
// by then (a failed write removes it), so that a spare that is still a
// backup's second name is the one offered for reuse.
func TestBackupRefreshInterruptedAtEveryStep(t *testing.T) {
	points := []string{"backup-reuse-before-rename", "backup-after-write", "backup-after-link",
		"backup-after-spare", "backup-before-replace", "backup-after-replace"}
	ctx := context.Background()
	for _, point := range points {
		for i := range 8 {
			changes, dropTmp := i/2, i%2 == 1
			t.Run(fmt.Sprintf("%s/after-%d-changes/drop-tmp=%v", point, changes, dropTmp), func(t *testing.T) {
				m := newTestManager(t)
				img, _ := formatted(t, m, "sp")
				v := find(t, m, img)
				for range changes {
					for _, r := range m.Rewrap(ctx, []*Volume{v}, true) {
						if r.Err != nil || len(r.Warnings) > 0 {
							t.Fatalf("rewrap: %v %v", r.Err, r.Warnings)
						}
					}
					v = find(t, m, img)
				}
				path := m.backupPath(v.UUID())
				hadPrev := exists(path + ".prev")
				before := backupSeq(t, m, path)
				// A header change without a backup refresh, as a commit before its refresh.
				tokenedit.EditToken(t, img, token.Type, func(b []byte) []byte { return b })
				v = find(t, m, img)
				armFailpoint(t, point)
				if !crashed(func() { _, _ = m.HeaderBackup(ctx, v, "") }) {
					if point == "backup-reuse-before-rename" && changes < 2 {
						return // nothing to reuse yet: the point is not on the way
					}
					t.Fatal("the failpoint was not reached")
				}
				failpoint = func(string) {}
				if got := backupSeq(t, m, path); got != before && got != v.Header.SeqID {
					t.Fatalf("after the crash the backup has sequence id %d, want %d (before) or %d (now)", got, before, v.Header.SeqID)
				}
				if hadPrev {
					backupSeq(t, m, path+".prev")
				}
				if dropTmp {
					_ = os.Remove(path + ".new")
				}
				if _, err := m.HeaderBackup(ctx, v, ""); err != nil {
					t.Fatalf("the next backup after the crash: %v", err)
				}
				if bi := m.backupInfo(ctx, v.Header); !bi.Current {
					t.Fatalf("after the next backup: %+v, want current", bi)
				}
				if got := backupSeq(t, m, path+".prev"); got != before && got != v.Header.SeqID {
					t.Errorf(".prev has sequence id %d, want %d or %d", got, before, v.Header.SeqID)
				}
				left, _ := filepath.Glob(filepath.Join(m.backupDir(), "*"))
				for _, p := range left {
					if filepath.Ext(p) == ".new" {
						t.Errorf("temporary file %s left behind", p)
					}
				}
				if fi, err := os.Stat(path + ".spare"); err == nil && fi.Size() != 0 {
					t.Errorf("the spare file holds %d bytes, want it empty", fi.Size())
				}
				// Erase leaves none of the files.
				if err := m.removeBackups(v.UUID()); err != nil {
					t.Fatal(err)
				}
				left, _ = filepath.Glob(filepath.Join(m.backupDir(), "*"))
				if len(left) > 0 {
					t.Errorf("after removeBackups: %v", left)
				}
			})
		}
	}
}

// backupSeq reads the backup at path as a header, checks that its
// platform keyslot opens through the KMS, and returns its sequence id.
func backupSeq(t *testing.T, m *Manager, path string) uint64 {
	t.Helper()
	f, err := luks2.OpenFile(path, false)
	if err != nil {
		t.Fatalf("backup %s: %v", path, err)
	}
	defer f.Close()
	h, err := luks2.Read(context.Background(), f)
	if err != nil {
		t.Fatalf("backup %s: %v", path, err)
	}
	v, err := m.fromHeader(path, h)
	if err != nil {
		t.Fatal(err)
	}
	vk, err := m.platformKey(context.Background(), v, f)
	vk.Wipe()
	if err != nil {
		t.Fatalf("backup %s does not open: %v", path, err)
	}
	return h.SeqID
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// A change of a volume whose header changed since its backup (by another
// tool) first backs up the header it starts from: afterwards .prev holds
// that header, not the older one, and the current backup the new one.
func TestChangeBacksUpTheHeaderItStartsFrom(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t)
	img, _ := formatted(t, m, "bf")
	tokenedit.EditToken(t, img, token.Type, func(b []byte) []byte { return b })
	v := find(t, m, img)
	from := v.Header.SeqID
	for _, r := range m.Rewrap(ctx, []*Volume{v}, true) {
		if r.Err != nil || len(r.Warnings) > 0 {
			t.Fatalf("rewrap: %v %v", r.Err, r.Warnings)
		}
	}
	after := find(t, m, img)
	path := m.backupPath(v.UUID())
	if got := backupSeq(t, m, path+".prev"); got != from {
		t.Errorf(".prev after the rewrap has sequence id %d, want %d (the header the rewrap started from)", got, from)
	}
	if got := backupSeq(t, m, path); got != after.Header.SeqID {
		t.Errorf("the backup after the rewrap has sequence id %d, want %d", got, after.Header.SeqID)
	}
}
