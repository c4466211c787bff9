package signature_test

import (
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/blockdev/internal/devtest"
	"github.com/atrest/atrest/pkg/loop"
)

// The md members were recorded with Debian's mdadm 4.2 under Debian's
// kernel in a QEMU guest (testdata/md/record.sh), because the development
// and CI kernels have no md driver and mdadm cannot create an array
// without one. Each is member 0 of a two-disk RAID1 of 4 MiB + 22 KiB, a
// size that makes the end-of-device offsets (0.90, 1.0) round.
func TestRecordedMDMembers(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []struct {
		meta string
		want string
	}{
		{"0.90", "linux_raid_member@END-0x10000"},
		{"1.0", "linux_raid_member@END-0x2000"},
		{"1.1", "linux_raid_member@0x0"},
		{"1.2", "linux_raid_member@0x1000"},
	} {
		t.Run(c.meta, func(t *testing.T) {
			img := gunzip(t, filepath.Join("testdata", "md", "md-"+c.meta+".img.gz"))
			want := c.want
			if off, ok := strings.CutPrefix(want, "linux_raid_member@END-"); ok {
				want = endOffset(t, img, off)
			}
			out := devtest.Run(t, "mdadm", "--examine", img)
			if !strings.Contains(out, "Version : "+c.meta) {
				t.Fatalf("mdadm --examine does not see a %s superblock:\n%s", c.meta, out)
			}
			dev := devtest.Attach(t, img, loop.Options{})
			checkDetectAndWipe(t, dev.Path, 0, []string{want})
			if out, err := devtest.RunStatus(t, "mdadm", "--examine", dev.Path); err == nil {
				t.Fatalf("mdadm still sees a superblock after the wipe:\n%s", out)
			}
		})
	}
}

// endOffset turns a hex distance from the rounded end into "type@0x…" the
// way the superblock code rounds: 0.90 at the last 64 KiB boundary minus
// 64 KiB, 1.0 at the last 4 KiB boundary minus 8 KiB.
func endOffset(t *testing.T, img, back string) string {
	t.Helper()
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	size := st.Size()
	switch back {
	case "0x10000":
		return "linux_raid_member@" + hex((size&^0xffff)-0x10000)
	case "0x2000":
		return "linux_raid_member@" + hex((size&^0xfff)-0x2000)
	}
	t.Fatalf("unknown end offset %s", back)
	return ""
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), strings.TrimSuffix(filepath.Base(path), ".gz"))
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	return dst
}
