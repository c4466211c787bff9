package volume

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/pkg/luks2"
)

// A process killed while it replaces the header backup never leaves the
// volume without one: the state directory holds a backup that restores
// the volume at every instant, and the next backup completes normally.
func TestBackupReplacementInterruptedLeavesABackup(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t)
	img := testImage(t)
	if _, err := m.Format(ctx, FormatOptions{Device: img, Name: "bk"}); err != nil {
		t.Fatal(err)
	}
	v, err := m.Find(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	armFailpoint(t, "backup-before-replace")
	if !crashed(func() { _, _ = m.HeaderBackup(ctx, v, "") }) {
		t.Fatal("the failpoint was not reached")
	}
	bi := m.backupInfo(ctx, v.Header)
	if !bi.Present || !bi.Current {
		t.Fatalf("after a crash while replacing the backup: %+v, want a current backup", bi)
	}
	failpoint = func(string) {}
	// The backup that is there restores the volume.
	if _, err := m.HeaderRestore(ctx, img, RestoreOptions{}); err != nil {
		t.Fatalf("restore from the backup left by the crash: %v", err)
	}
	if _, err := m.HeaderBackup(ctx, v, ""); err != nil {
		t.Fatalf("the next backup after the crash: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(m.backupDir(), "*"))
	for _, p := range left {
		if filepath.Ext(p) == ".new" {
			t.Errorf("temporary file %s left behind", p)
		}
	}
}

// After header restore, status finds a current backup: the restore leaves
// the backup of the header it wrote, not one that is older than it.
func TestRestoreLeavesACurrentBackup(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t)
	img := testImage(t)
	if _, err := m.Format(ctx, FormatOptions{Device: img, Name: "rs"}); err != nil {
		t.Fatal(err)
	}
	external := filepath.Join(t.TempDir(), "hdr.luks2")
	v, err := m.Find(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.HeaderBackup(ctx, v, external); err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{"", external} {
		if _, err := m.HeaderRestore(ctx, img, RestoreOptions{Backup: from}); err != nil {
			t.Fatalf("restore from %q: %v", from, err)
		}
		sts, errs := m.StatusOf(ctx, []string{img})
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		if b := sts[0].Backup; !b.Present || !b.Current {
			t.Errorf("after header restore from %q, status says the backup is %+v; problems %q", from, b, sts[0].Problems)
		}
	}
	// The state directory's backup is the device's header, byte for byte
	// what cryptsetup luksHeaderBackup would write now.
	f, err := luks2.OpenFile(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := filepath.Join(t.TempDir(), "now.luks2")
	if err := luks2.BackupFile(ctx, f, want); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(m.backupPath(v.UUID()))
	exp, _ := os.ReadFile(want)
	if string(got) != string(exp) {
		t.Error("the state directory's backup differs from a backup of the restored header")
	}
}
