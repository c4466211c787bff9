package volume

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/pkg/config"
)

// configFor finds a configured volume by UUID or by a device path behind a
// symlink, the first entry in the file's order winning, and follows a
// symlink that moved to another device.
func TestConfigForFollowsTheConfiguration(t *testing.T) {
	dir := t.TempDir()
	a, b, link := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img"), filepath.Join(dir, "by-id")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}
	const uuid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
	m := &Manager{cfg: &config.Config{Volumes: []config.Volume{
		{Name: "first", Device: link},
		{Name: "byuuid", UUID: uuid},
		{Name: "second", Device: a},
	}}}
	name := func(path, uuid string) string {
		if c := m.configFor(path, uuid); c != nil {
			return c.Name
		}
		return ""
	}
	if got := name(a, ""); got != "first" {
		t.Fatalf("device behind the symlink: %q, want first", got)
	}
	if got := name(b, "0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9"); got != "byuuid" {
		t.Fatalf("by UUID: %q, want byuuid", got)
	}
	if got := name(b, ""); got != "" {
		t.Fatalf("an unconfigured device: %q", got)
	}
	// udev moves the link to b: a is now only the third entry's.
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(b, link); err != nil {
		t.Fatal(err)
	}
	if got := name(a, ""); got != "second" {
		t.Fatalf("after the link moved, a: %q, want second", got)
	}
	if got := name(b, ""); got != "first" {
		t.Fatalf("after the link moved, b: %q, want first", got)
	}
}
