// Package looptest gives tests a loop device over a fresh sparse image
// file, detached when the test ends. It is its own package because
// pkg/loop's tests import internal/testutil.
package looptest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/pkg/loop"
)

// Disk returns a loop device over a new sparse image of sizeMiB.
func Disk(t testing.TB, sizeMiB int64) *loop.Device {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, sizeMiB<<20); err != nil {
		t.Fatal(err)
	}
	d, err := loop.Attach(img, loop.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Detach() })
	return d
}
