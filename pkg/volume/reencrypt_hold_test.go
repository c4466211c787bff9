package volume

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/luks2"
)

// A volume whose re-encryption was interrupted is refused by open before
// anything is asked of the KMS or written: the error names the progress
// and the command that finishes it, classified as its own kind (the CLI's
// exit code 20, atrestd's reason "reencrypting").
func TestOpenRefusesVolumeInReencryption(t *testing.T) {
	m, img, v, _ := reencryptSetup(t)
	killedAfterStart(t, m, v)
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	res := m.Open(context.Background(), []*Volume{find(t, m, img)}, OpenOptions{})
	var re *ReencryptingError
	if !errors.As(res[0].Err, &re) || Classify(res[0].Err).Kind != KindReencrypting {
		t.Fatalf("open of a volume in re-encryption: %v", res[0].Err)
	}
	msg := res[0].Err.Error()
	if re.Done != 0 || re.Total != 4<<20 || !strings.Contains(msg, "0 of 4194304 bytes done") || !strings.Contains(msg, "run atrest reencrypt data1") {
		t.Fatalf("message %q (done %d of %d)", msg, re.Done, re.Total)
	}
	after, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("the refused open changed the device")
	}
}

// A header backup taken before a re-encryption is refused once the volume
// was re-encrypted (its volume key does not decrypt the data any more),
// and while one is under way; the device is unchanged. The backup taken at
// the end restores; --force restores the stale one anyway.
func TestHeaderRestoreRefusesBackupBeforeReencryption(t *testing.T) {
	ctx := context.Background()
	m, img, v, b := reencryptSetup(t)
	stale := t.TempDir() + "/before.luks2"
	if _, err := m.HeaderBackup(ctx, v, stale); err != nil {
		t.Fatal(err)
	}
	refused := func(what string) {
		t.Helper()
		before, _ := os.ReadFile(img)
		_, err := m.HeaderRestore(ctx, img, RestoreOptions{Backup: stale})
		if !errors.Is(err, luks2.ErrBackupStale) || Classify(err).Kind != KindBackupStale || !strings.Contains(err.Error(), what) {
			t.Fatalf("restore of a backup older than the re-encryption: %v", err)
		}
		if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
			t.Fatal("the refused restore changed the device")
		}
	}
	killedAfterStart(t, m, v)
	refused("a re-encryption has started since it was taken")
	if _, err := m.Reencrypt(ctx, find(t, m, img), ReencryptOptions{}); err != nil {
		t.Fatal(err)
	}
	refused("the volume key in it is not the device's")
	if _, err := m.HeaderRestore(ctx, img, RestoreOptions{}); err != nil {
		t.Fatalf("the backup taken at the end: %v", err)
	}
	if _, err := m.HeaderRestore(ctx, img, RestoreOptions{Backup: stale, Force: true}); err != nil {
		t.Fatalf("forced: %v", err)
	}
	if !volumeKey(t, m, find(t, m, img)).Equal(b.vk) {
		t.Fatal("the forced restore did not put the old key back")
	}
}
