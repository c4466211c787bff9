package blockdev_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/blockdev/internal/devtest"
	"github.com/atrest/atrest/pkg/loop"
)

const mib = 1 << 20

func TestInspectLoopDevice(t *testing.T) {
	for _, ss := range []uint32{512, 4096} {
		img := devtest.Image(t, 48*mib)
		dev := devtest.Attach(t, img, loop.Options{SectorSize: ss})
		// Reach it through a symlink, the way /dev/disk/by-id names disks.
		link := filepath.Join(t.TempDir(), "by-id-disk")
		if err := os.Symlink(dev.Path, link); err != nil {
			t.Fatal(err)
		}
		d, err := blockdev.Inspect(link)
		if err != nil {
			t.Fatal(err)
		}
		if d.Path != dev.Path || d.Kind != blockdev.BlockDevice {
			t.Fatalf("resolved to %s (%v), want block device %s", d.Path, d.Kind, dev.Path)
		}
		if d.Size != 48*mib || d.LogicalSectorSize != int(ss) || d.PhysicalSectorSize < int(ss) {
			t.Fatalf("size %d, sectors %d/%d; want %d bytes, logical %d", d.Size, d.LogicalSectorSize, d.PhysicalSectorSize, 48*mib, ss)
		}
		if d.Major != 7 || d.Name != filepath.Base(dev.Path) || d.Partition || d.ReadOnly {
			t.Fatalf("device facts %+v", d)
		}
		if d.Loop == nil || d.Loop.BackingFile != img || !d.Loop.Autoclear {
			t.Fatalf("loop facts %+v, want backing file %s with autoclear", d.Loop, img)
		}
	}
}

func TestInspectPartition(t *testing.T) {
	dev := devtest.Loop(t, 32*mib)
	devtest.Run(t, "sgdisk", "-o", "-n", "1:0:+8M", dev.Path)
	p1 := devtest.AddPartition(t, dev.Path, 1, 1*mib, 8*mib)
	d, err := blockdev.Inspect(p1)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Partition || d.Disk != filepath.Base(dev.Path) || d.Size != 8*mib {
		t.Fatalf("partition facts %+v", d)
	}
	whole, err := blockdev.Inspect(dev.Path)
	if err != nil {
		t.Fatal(err)
	}
	if len(whole.Partitions) != 1 || whole.Partitions[0] != filepath.Base(dev.Path)+"p1" {
		t.Fatalf("disk partitions %v", whole.Partitions)
	}
}

func TestInspectRegularFile(t *testing.T) {
	img := devtest.Image(t, 20*mib)
	d, err := blockdev.Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	if d.Kind != blockdev.RegularFile || d.Size != 20*mib || d.LogicalSectorSize != 512 || d.Name != "" {
		t.Fatalf("file facts %+v", d)
	}
	if err := d.CheckUnused(); err != nil {
		t.Fatalf("unused file refused: %v", err)
	}
}

func TestInspectRefusesOtherThings(t *testing.T) {
	for path, want := range map[string]error{
		"/dev/null":                    blockdev.ErrUnsupported,
		t.TempDir():                    blockdev.ErrUnsupported,
		"/nonexistent/atrest/disk.img": blockdev.ErrNotFound,
	} {
		if _, err := blockdev.Inspect(path); !errors.Is(err, want) {
			t.Errorf("Inspect(%s) = %v, want %v", path, err, want)
		}
	}
}
