package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeSys builds a sysfs tree the way the kernel lays it out, for the
// relations this host cannot make for real: it has no device-mapper and no
// md driver, so nothing here can create a holders/ link.
type fakeSys struct {
	t    *testing.T
	root string
	mnts []string
}

func newFakeSys(t *testing.T) *fakeSys {
	return &fakeSys{t: t, root: t.TempDir()}
}

func (f *fakeSys) write(path, content string) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSys) link(target, link string) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		f.t.Fatal(err)
	}
}

// device adds a block device at dir (relative to devices/) with its dev
// number and the class/block and dev/block links.
func (f *fakeSys) device(rel string, maj, min int) string {
	dir := filepath.Join(f.root, "devices", rel)
	name := filepath.Base(rel)
	f.write(filepath.Join(dir, "dev"), fmt.Sprintf("%d:%d\n", maj, min))
	if err := os.MkdirAll(filepath.Join(dir, "holders"), 0o755); err != nil {
		f.t.Fatal(err)
	}
	f.link(dir, filepath.Join(f.root, "class", "block", name))
	f.link(dir, filepath.Join(f.root, "dev", "block", fmt.Sprintf("%d:%d", maj, min)))
	return dir
}

func (f *fakeSys) disk(name string, maj, min int) string {
	dir := f.device("pci/block/"+name, maj, min)
	f.write(filepath.Join(dir, "queue", "rotational"), "0\n")
	return dir
}

func (f *fakeSys) partition(disk, name string, maj, min int) {
	dir := f.device("pci/block/"+disk+"/"+name, maj, min)
	f.write(filepath.Join(dir, "partition"), "1\n")
}

// holder stacks a virtual device (dm-N with a dm name, or mdN) on dev.
func (f *fakeSys) holder(dev, name, dmName string, maj, min int) {
	dir := f.device("virtual/block/"+name, maj, min)
	if dmName != "" {
		f.write(filepath.Join(dir, "dm", "name"), dmName+"\n")
	}
	f.link(dir, filepath.Join(f.root, "class", "block", dev, "holders", name))
}

func (f *fakeSys) mounted(maj, min int, at string) {
	f.mnts = append(f.mnts, fmt.Sprintf("99 1 %d:%d / %s rw - ext4 /dev/x rw", maj, min, at))
}

func (f *fakeSys) btrfsMember(fsid, dev string) {
	f.write(filepath.Join(f.root, "fs", "btrfs", fsid, "devices", dev), "")
}

func (f *fakeSys) check(name string) error {
	f.t.Helper()
	mi := filepath.Join(f.t.TempDir(), "mountinfo")
	f.write(mi, strings.Join(append(f.mnts, ""), "\n"))
	s := system{sys: f.root, mountinfo: mi, swaps: filepath.Join(f.root, "no-swaps")}
	n, err := s.nodeByName(name)
	if err != nil {
		f.t.Fatal(err)
	}
	return s.checkUnused(&Device{Path: "/dev/" + name, Kind: BlockDevice, node: n})
}

func TestCheckUnusedStacking(t *testing.T) {
	for _, c := range []struct {
		name     string
		build    func(f *fakeSys)
		sentinel error
		msg      string
	}{
		{"unused disk", func(f *fakeSys) {}, nil, ""},
		{"mounted", func(f *fakeSys) { f.mounted(8, 16, "/data") },
			ErrMounted, "/dev/sdb is mounted on /data"},
		{"held by a mounted dm-crypt mapping", func(f *fakeSys) {
			f.holder("sdb", "dm-0", "luks-3f2a", 253, 0)
			f.mounted(253, 0, "/srv")
		}, ErrHeld, "/dev/sdb is held by /dev/dm-0 (luks-3f2a): /dev/dm-0 is mounted on /srv"},
		{"held by an md array", func(f *fakeSys) { f.holder("sdb", "md0", "", 9, 0) },
			ErrHeld, "/dev/sdb is held by /dev/md0"},
		{"partition mounted", func(f *fakeSys) {
			f.partition("sdb", "sdb1", 8, 17)
			f.mounted(8, 17, "/boot")
		}, ErrPartitionInUse, "/dev/sdb has a partition in use: /dev/sdb1 is mounted on /boot"},
		{"partition under LVM", func(f *fakeSys) {
			f.partition("sdb", "sdb2", 8, 18)
			f.holder("sdb2", "dm-1", "vg0-root", 253, 1)
		}, ErrPartitionInUse, "/dev/sdb has a partition in use: /dev/sdb2 is held by /dev/dm-1 (vg0-root)"},
		{"unused partitions", func(f *fakeSys) {
			f.partition("sdb", "sdb1", 8, 17)
			f.partition("sdb", "sdb2", 8, 18)
		}, nil, ""},
		{"member of a btrfs mounted elsewhere", func(f *fakeSys) { f.btrfsMember("6a1f", "sdb") },
			ErrMounted, "/dev/sdb is a member of btrfs filesystem 6a1f, which is mounted on a mount point outside this mount namespace"},
		{"mounted wins over held", func(f *fakeSys) {
			f.mounted(8, 16, "/data")
			f.holder("sdb", "dm-0", "x", 253, 0)
		}, ErrMounted, "/dev/sdb is mounted on /data"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeSys(t)
			f.disk("sdb", 8, 16)
			c.build(f)
			err := f.check("sdb")
			if c.sentinel == nil {
				if err != nil {
					t.Fatalf("got %v, want no refusal", err)
				}
				return
			}
			if !errors.Is(err, c.sentinel) || !errors.Is(err, ErrInUse) {
				t.Fatalf("got %v, want %v and ErrInUse", err, c.sentinel)
			}
			if err.Error() != c.msg {
				t.Fatalf("message %q\nwant    %q", err, c.msg)
			}
		})
	}
}

func TestInspectFactsFromSysfs(t *testing.T) {
	f := newFakeSys(t)
	f.disk("sdb", 8, 16)
	f.partition("sdb", "sdb1", 8, 17)
	f.holder("sdb1", "dm-0", "luks-1", 253, 0)
	s := system{sys: f.root}
	n, err := s.nodeByDev(8, 17)
	if err != nil {
		t.Fatal(err)
	}
	if !n.isPartition() || filepath.Base(filepath.Dir(n.dir)) != "sdb" {
		t.Fatalf("sdb1 not seen as a partition of sdb: %+v", n)
	}
	if got := n.holders(); len(got) != 1 || got[0] != "dm-0" || s.holderName("dm-0") != "luks-1" {
		t.Fatalf("holders %v (%q)", got, s.holderName("dm-0"))
	}
	disk, _ := s.nodeByDev(8, 16)
	if got := disk.partitions(); len(got) != 1 || got[0] != "sdb1" {
		t.Fatalf("partitions %v", got)
	}
	if _, err := s.nodeByDev(8, 99); err == nil {
		t.Fatal("found a device sysfs does not have")
	}
}
