package dmcrypt

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/looptest"
)

// The table names the backing device by the major:minor of the open file
// it was given, the number the kernel lists for it, and measures that
// same device; a path given instead is opened once and named the same
// way; anything but a block device is refused before the kernel is asked.
func TestBackingDeviceIsNamedByItsNumber(t *testing.T) {
	testutil.RequireRoot(t)
	disk := looptest.Disk(t, 8)
	sysfs, err := os.ReadFile("/sys/class/block/" + filepath.Base(disk.Path) + "/dev")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSpace(string(sysfs))
	f, err := os.Open(disk.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, size, err := BackingDevice(f)
	if err != nil || got != want || size != 8<<20 {
		t.Fatalf("BackingDevice(%s) = %q, %d, %v; want %q, %d", disk.Path, got, size, err, want, 8<<20)
	}

	p := Params{Device: disk.Path, OffsetSectors: 2048}
	if got, sectors, err := p.backing(); err != nil || got != want || sectors != 8<<20/512-2048 {
		t.Fatalf("backing() by path = %q, %d, %v; want %q, %d", got, sectors, err, want, 8<<20/512-2048)
	}
	p = Params{Device: "shown name", Backing: f, OffsetSectors: 2048}
	if got, _, err := p.backing(); err != nil || got != want {
		t.Fatalf("backing() of an open device = %q, %v; want %q", got, err, want)
	}

	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	p = Params{Device: img}
	if _, _, err := p.backing(); err == nil {
		t.Fatal("a regular file was accepted as the backing block device")
	}
}
