package dmcrypt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/looptest"
	"golang.org/x/sys/unix"
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

// While Open loads a table it holds the backing disk's lock shared, so
// udev, which takes it exclusively (LOCK_EX|LOCK_NB) before re-reading a
// disk's partition table, does not make the kernel claim the disk then;
// and Open waits for a re-read in progress (an exclusive holder) to end.
func TestOpenHoldsTheBackingDiskLock(t *testing.T) {
	testutil.RequireRoot(t)
	disk := looptest.Disk(t, 8)
	f, err := os.Open(disk.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	udev, err := os.Open(disk.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer udev.Close()

	release, err := lockBacking(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(udev.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("udev's exclusive lock while the table loads: %v, want EWOULDBLOCK", err)
	}
	release()
	if err := unix.Flock(int(udev.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("udev's exclusive lock after the load: %v", err)
	}

	// udev holds it now: the next load waits for its release.
	var released atomic.Bool
	done := make(chan bool)
	go func() {
		release, err := lockBacking(f)
		if err != nil {
			t.Error(err)
			done <- false
			return
		}
		defer release()
		done <- released.Load()
	}()
	time.Sleep(200 * time.Millisecond)
	released.Store(true)
	if err := unix.Flock(int(udev.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if !<-done {
		t.Error("the table load did not wait for udev's partition-table re-read to end")
	}
}

// A table the kernel refuses because the backing device is claimed says
// so, and is ErrBackingBusy (the CLI's and atrestd's held-exclusively).
func TestLoadBusyIsBackingBusy(t *testing.T) {
	err := loadError("b05", fmt.Errorf("load: %w", unix.EBUSY))
	if !errors.Is(err, ErrBackingBusy) || !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "b05") {
		t.Fatalf("loadError(EBUSY) = %v", err)
	}
}

// Where udev runs, /dev/mapper/NAME is udev's to make (atrestd's unit may
// not mknod). On a loaded machine mapping many volumes udev's queue runs
// seconds behind: Open waits for the node as long as udev has events
// queued, not a fixed two seconds, and gives up udevWait after the queue
// emptied.
func TestNodeWaitFollowsUdevsQueue(t *testing.T) {
	testutil.RequireRoot(t)
	disk := looptest.Disk(t, 8)
	var st unix.Stat_t
	if err := unix.Stat(disk.Path, &st); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	old := udevQueue
	udevQueue = filepath.Join(dir, "queue")
	t.Cleanup(func() { udevQueue = old })
	node := filepath.Join(dir, "b05")

	if err := os.WriteFile(udevQueue, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	found := make(chan bool)
	go func() { found <- waitUdev(node, st.Rdev) }()
	// udev gets to the event only after udevWait, its queue busy all along.
	time.Sleep(udevWait + 500*time.Millisecond)
	if err := os.Symlink(disk.Path, node); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(udevQueue); err != nil {
		t.Fatal(err)
	}
	if !<-found {
		t.Fatal("the wait gave up on udev's node while udev still had events queued")
	}

	// Queue empty and no node coming: it gives up (and Open makes the node
	// or says why it could not).
	if waitUdev(filepath.Join(dir, "never"), st.Rdev) {
		t.Fatal("a node that does not exist was reported present")
	}
}
