package volume

import (
	"context"
	"os"
	"strings"
	"testing"
)

// A device cut down to exactly its header (a failed resize, an image
// copied with its data left behind) still has a readable header, but it
// is no volume: status must not call it healthy, and header check must
// say so and exit as "needs attention".
func TestDeviceTruncatedToItsHeaderIsNotHealthy(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t)
	img, res := formatted(t, m, "cut")
	v := find(t, m, img)
	if _, err := m.HeaderBackup(ctx, v, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, int64(16<<20)); err != nil {
		t.Fatal(err)
	}
	sts, errs := m.StatusOf(ctx, []string{img})
	if len(errs) > 0 && errs[0] != nil {
		t.Fatal(errs[0])
	}
	if len(sts) != 1 {
		t.Fatalf("status of %s: %d volumes", img, len(sts))
	}
	if sts[0].Healthy {
		t.Fatalf("status calls a volume with no data area healthy: %+v", sts[0])
	}
	if !strings.Contains(strings.Join(sts[0].Problems, "\n"), "data") {
		t.Errorf("status problems do not mention the missing data: %q", sts[0].Problems)
	}
	chk, err := m.HeaderCheck(ctx, img, false)
	if err != nil {
		t.Fatal(err)
	}
	if chk.UUID != res.UUID || chk.DataProblem == "" {
		t.Errorf("header check on a truncated device: %+v, want its UUID and a data problem", chk)
	}
}
