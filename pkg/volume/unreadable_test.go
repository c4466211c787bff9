package volume

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil/tokenedit"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// formatWithRecovery formats a fresh image as name with a printed
// recovery key and returns the image and that key.
func formatWithRecovery(t *testing.T, m *Manager, name string) (string, *secret.Key) {
	t.Helper()
	img := testImage(t)
	res, err := m.Format(context.Background(), FormatOptions{Device: img, Name: name, Recovery: config.RecoveryPrint})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(res.Recovery.Wipe)
	return img, res.Recovery.Key
}

// rewriteAtrestToken edits the JSON of img's atrest token.
func rewriteAtrestToken(t *testing.T, img string, edit func(string) string) int {
	t.Helper()
	return tokenedit.EditToken(t, img, token.Type, func(b []byte) []byte { return []byte(edit(string(b))) })
}

// An atrest token this build cannot parse (from a newer atrest, or
// corrupt) is skipped as cryptsetup skips it: the volume keeps its name, status reports the token as a problem instead of failing, a
// header backup is taken, the recovery key reseals the volume under the
// KMS, and erase destroys it.
func TestUnreadableTokenBlocksNothingThatNeedsNoToken(t *testing.T) {
	for _, tc := range []struct{ name, from, to string }{
		{"newer version", `"version":1`, `"version":7`},
		{"corrupt field", `"created":"`, `"created":"not a time`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			m := newTestManager(t)
			img, rk := formatWithRecovery(t, m, "skipme")
			id := rewriteAtrestToken(t, img, func(s string) string { return strings.Replace(s, tc.from, tc.to, 1) })

			v, err := m.Find(ctx, img)
			if err != nil {
				t.Fatalf("find with an unreadable token: %v", err)
			}
			if v.Name != "skipme" {
				t.Fatalf("the name recorded in the unreadable token is lost: %q", v.Name)
			}
			if v.Managed() || len(v.Unreadable) != 1 || !errors.Is(v.Unreadable[0].Err, token.ErrInvalid) {
				t.Fatalf("volume: managed %v, unreadable %+v", v.Managed(), v.Unreadable)
			}
			sts, errs := m.StatusOf(ctx, []string{img})
			if len(errs) != 0 || len(sts) != 1 {
				t.Fatalf("status: %v", errs)
			}
			if sts[0].Healthy || !strings.Contains(strings.Join(sts[0].Problems, "\n"), "atrest token "+strconv.Itoa(id)) {
				t.Fatalf("status does not report the unreadable token %d: %q", id, sts[0].Problems)
			}
			if _, err := m.HeaderBackup(ctx, v, ""); err != nil {
				t.Fatalf("header backup: %v", err)
			}
			res, err := m.Reseal(ctx, v, rk)
			if err != nil {
				t.Fatalf("recovery reseal with the right recovery key: %v", err)
			}
			after, err := m.Find(ctx, img)
			if err != nil || !after.Managed() || after.Name != "skipme" || after.Platform.Keyslot != res.NewKeyslot {
				t.Fatalf("after reseal: %+v, %v", after, err)
			}
			keys, uerrs := m.unlock(ctx, []*Volume{after})
			wipeAll(keys)
			if uerrs[0] != nil {
				t.Fatalf("the resealed volume does not unlock through the KMS: %v", uerrs[0])
			}

			if _, err := m.Erase(ctx, after, "skipme"); err != nil {
				t.Fatalf("erase: %v", err)
			}
			if _, err := os.Stat(m.backupPath(after.UUID())); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("erase kept the header backup: %v", err)
			}
		})
	}
}

// Erase and header backup work on a header whose only atrest token cannot
// be parsed, without a reseal first.
func TestEraseWithUnreadableToken(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t)
	img, _ := formatWithRecovery(t, m, "gone")
	rewriteAtrestToken(t, img, func(s string) string { return strings.Replace(s, `"version":1`, `"version":99`, 1) })
	v, err := m.Find(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Erase(ctx, v, "gone"); err != nil {
		t.Fatalf("erase: %v", err)
	}
	if after, err := m.Find(ctx, img); err == nil && len(after.Header.Keyslots) > 0 {
		t.Fatalf("the erased volume still has keyslots %v", after.Header.ListKeyslots())
	}
}
