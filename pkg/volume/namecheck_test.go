package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/config"
)

// fakeBlockDevices makes Scan see exactly the image files imgs as the
// machine's block devices (a sysfs directory whose entries name them), as
// if the machine had that many LUKS devices.
func fakeBlockDevices(t testing.TB, imgs ...string) {
	dir := t.TempDir()
	for _, img := range imgs {
		// Scan probes /dev/<entry with ! for />: point it at the image.
		entry := filepath.Join(dir, strings.ReplaceAll(".."+img, "/", "!"))
		if err := os.MkdirAll(entry, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(entry, "size"), []byte("40960\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := sysBlock
	sysBlock = dir
	t.Cleanup(func() { sysBlock = old })
}

// Format's name check reads the configuration, the open mappings and the
// target, not every LUKS header on the machine: a name only an
// unconfigured, closed volume on another device records does not refuse
// the format (opening both would; Open checks the mapping), while a name
// the configuration gives another device, or that the token on a
// configured device records, still does.
func TestFormatNameCheckReadsTheConfigurationNotEveryHeader(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t)
	elsewhere, _ := formatted(t, m, "elsewhere")
	configured, _ := formatted(t, m, "configured")
	fakeBlockDevices(t, elsewhere, configured)
	m.cfg.Volumes = []config.Volume{{Name: "cfg", Device: configured}, {Name: "claimed", Device: "/dev/disk/by-id/not-here"}}
	if v := find(t, m, "elsewhere"); v.Device != elsewhere {
		t.Fatalf("the fake block devices are not scanned: found %s", v.Device)
	}

	res, err := m.Format(ctx, FormatOptions{Device: testImage(t), Name: "elsewhere"})
	if err != nil {
		t.Fatalf("format under the name of an unconfigured, closed volume elsewhere: %v", err)
	}
	res.Recovery.Wipe()
	for _, name := range []string{"configured", "cfg", "claimed"} {
		if _, err := m.Format(ctx, FormatOptions{Device: testImage(t), Name: name}); !errors.Is(err, ErrNameInUse) {
			t.Errorf("format under the name %q the configuration holds: %v, want ErrNameInUse", name, err)
		}
	}
}

// BenchmarkStatusNames is `atrest status` of 1 and of 16 named volumes on
// a machine with 64 LUKS devices (image files Scan sees as block
// devices); the 16 take one scan, as the 1 does.
func BenchmarkStatusNames(b *testing.B) {
	m, vols := benchVolumes(b, benchConfig(b, "local", ""), 64)
	imgs := make([]string, len(vols))
	for i, v := range vols {
		imgs[i] = v.Device
	}
	fakeBlockDevices(b, imgs...)
	ctx := context.Background()
	for _, n := range []int{1, 16} {
		refs := make([]string, n)
		for i := range refs {
			refs[i] = vols[i].Name
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for range b.N {
				sts, errs := m.StatusOf(ctx, refs)
				if len(errs) > 0 || len(sts) != n {
					b.Fatal(errs)
				}
			}
		})
	}
}
