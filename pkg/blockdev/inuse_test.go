package blockdev_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/blockdev/internal/devtest"
	"github.com/atrest/atrest/pkg/loop"
)

// refused inspects path and checks that CheckUnused refuses it with the
// typed error T matching sentinel, with exactly msg.
func refused[T error](t *testing.T, path string, sentinel error, msg string) T {
	t.Helper()
	d, err := blockdev.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	err = d.CheckUnused()
	var typed T
	if !errors.As(err, &typed) || !errors.Is(err, sentinel) || !errors.Is(err, blockdev.ErrInUse) {
		t.Fatalf("CheckUnused(%s) = %v, want %T matching %v", path, err, typed, sentinel)
	}
	if err.Error() != msg {
		t.Fatalf("message %q\nwant    %q", err, msg)
	}
	return typed
}

func unused(t *testing.T, path string) *blockdev.Device {
	t.Helper()
	d, err := blockdev.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CheckUnused(); err != nil {
		t.Fatalf("CheckUnused(%s) = %v, want nil", path, err)
	}
	return d
}

func TestMountedIsRefused(t *testing.T) {
	dev := devtest.Loop(t, 32*mib)
	devtest.Run(t, "mkfs.ext4", "-q", "-F", dev.Path)
	unused(t, dev.Path)
	dir := devtest.Mount(t, dev.Path, "ext4")
	e := refused[*blockdev.MountedError](t, dev.Path, blockdev.ErrMounted, dev.Path+" is mounted on "+dir)
	if e.FSType != "ext4" {
		t.Fatalf("fstype %q", e.FSType)
	}
}

func TestMountedBtrfsMembersAreRefused(t *testing.T) {
	a, b := devtest.Loop(t, 128*mib), devtest.Loop(t, 128*mib)
	devtest.Run(t, "mkfs.btrfs", "-q", "-f", "-d", "single", "-m", "single", a.Path, b.Path)
	dir := devtest.MountData(t, a.Path, "btrfs", "device="+b.Path)
	// btrfs mounts show an anonymous 0:N in mountinfo, so the source names
	// the device...
	refused[*blockdev.MountedError](t, a.Path, blockdev.ErrMounted, a.Path+" is mounted on "+dir)
	// ...and the other member appears only under /sys/fs/btrfs.
	uuid := strings.TrimSpace(devtest.Run(t, "blkid", "-p", "-s", "UUID", "-o", "value", b.Path))
	refused[*blockdev.MountedError](t, b.Path, blockdev.ErrMounted,
		b.Path+" is a member of btrfs filesystem "+uuid+", which is mounted on "+dir)
}

func TestSwapIsRefused(t *testing.T) {
	dev := devtest.Loop(t, 32*mib)
	devtest.Run(t, "mkswap", dev.Path)
	devtest.Swapon(t, dev.Path)
	refused[*blockdev.SwapError](t, dev.Path, blockdev.ErrSwap, dev.Path+" is in use as swap")

	// A swap file: written out in full (swapon refuses holes).
	file := filepath.Join(t.TempDir(), "swapfile")
	if err := os.WriteFile(file, make([]byte, 16*mib), 0o600); err != nil {
		t.Fatal(err)
	}
	devtest.Run(t, "mkswap", file)
	devtest.Swapon(t, file)
	refused[*blockdev.SwapError](t, file, blockdev.ErrSwap, file+" is in use as swap")
}

func TestPartitionInUseIsRefused(t *testing.T) {
	dev := devtest.Loop(t, 32*mib)
	devtest.Run(t, "sgdisk", "-o", "-n", "1:0:+8M", "-n", "2:0:+8M", dev.Path)
	p1 := devtest.AddPartition(t, dev.Path, 1, 1*mib, 8*mib)
	p2 := devtest.AddPartition(t, dev.Path, 2, 9*mib, 8*mib)
	devtest.Run(t, "mkfs.ext4", "-q", "-F", p2)
	unused(t, dev.Path)
	dir := devtest.Mount(t, p2, "ext4")
	e := refused[*blockdev.PartitionInUseError](t, dev.Path, blockdev.ErrPartitionInUse,
		dev.Path+" has a partition in use: "+p2+" is mounted on "+dir)
	if e.Partition != p2 || !errors.Is(e.Cause, blockdev.ErrMounted) {
		t.Fatalf("partition %s, cause %v", e.Partition, e.Cause)
	}
	// The partition itself is refused as mounted; its sibling is free.
	refused[*blockdev.MountedError](t, p2, blockdev.ErrMounted, p2+" is mounted on "+dir)
	unused(t, p1)
}

// A loop device stacked on another is this host's honest "holder": the
// kernel has no device-mapper or md here, so nothing creates a sysfs
// holders/ link (fakesys_test.go covers those); a loop device reading from
// a device is the stacking that exists.
func TestBackingOfALoopInUseIsRefused(t *testing.T) {
	img := devtest.Image(t, 32*mib)
	lower := devtest.Attach(t, img, loop.Options{})
	upper := devtest.Attach(t, lower.Path, loop.Options{})
	devtest.Run(t, "mkfs.ext4", "-q", "-F", upper.Path)
	// Stacked but unused: not a refusal, writing the lower device is the
	// user's business.
	unused(t, lower.Path)
	dir := devtest.Mount(t, upper.Path, "ext4")
	refused[*blockdev.BackingInUseError](t, lower.Path, blockdev.ErrBackingInUse,
		lower.Path+" is the backing file of "+upper.Path+", which is in use: "+upper.Path+" is mounted on "+dir)
	// The image file under both is refused the same way, through the chain.
	refused[*blockdev.BackingInUseError](t, img, blockdev.ErrBackingInUse,
		img+" is the backing file of "+lower.Path+", which is in use: "+
			lower.Path+" is the backing file of "+upper.Path+", which is in use: "+upper.Path+" is mounted on "+dir)
}

// A mount in another mount namespace (a container) is invisible in ours;
// the kernel's exclusive claim still refuses the device.
func TestMountInAnotherNamespaceIsBusy(t *testing.T) {
	dev := devtest.Loop(t, 32*mib)
	devtest.Run(t, "mkfs.ext4", "-q", "-F", dev.Path)
	unshare := testutil.RequireCommand(t, "unshare", "util-linux")
	dir := t.TempDir()
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "sh", "-c",
		"mount -t ext4 "+dev.Path+" "+dir+" && echo mounted && exec sleep 600")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "mounted\n" {
		t.Fatalf("mount in a new namespace failed: %q", line)
	}
	d := unused(t, dev.Path) // nothing in our mountinfo
	_, err = blockdev.OpenExclusive(context.Background(), d)
	var busy *blockdev.BusyError
	if !errors.As(err, &busy) || !errors.Is(err, blockdev.ErrBusy) || !errors.Is(err, unix.EBUSY) || busy.Locked {
		t.Fatalf("OpenExclusive = %v, want a BusyError from EBUSY", err)
	}
}
