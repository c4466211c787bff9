package boot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/integration/vm"
	"github.com/atrest/atrest/internal/testutil"
)

// Machine is one test's Debian node: a private copy of the cached root
// image (virtio disk 0, persistent across the test's boots), the data
// disks the test adds (virtio disks 1, 2... in the order added) and the
// files queued for the root file system before the next boot.
//
// The file methods only queue changes; Boot and ReadFile apply them with
// debugfs, so nothing is mounted on the host. A queued change that cannot
// be applied fails the test at that point.
type Machine struct {
	t      testing.TB
	img    *Image
	work   string
	logs   string
	root   string
	initrd string
	disks  []string
	edit   rootEdit
	staged int
	boots  int
	tpm    string // the swtpm state directory (AddTPM), "" without a TPM
}

// New gates the test on the tier's requirements, prepares the cached
// image (debootstrap on the first run on a machine, about 2 minutes) and
// gives the test its own copy of it. Under -short it skips; missing
// tools skip, or fail in strict mode (make test).
func New(t testing.TB) *Machine {
	t.Helper()
	if testing.Short() {
		t.Skip("booted-Debian tier; not part of the unit tier (-short)")
	}
	for cmd, pkg := range map[string]string{
		"qemu-system-x86_64": "qemu-system-x86", "debootstrap": "debootstrap",
		"debugfs": "e2fsprogs", "mke2fs": "e2fsprogs", "e2fsck": "e2fsprogs", "dumpe2fs": "e2fsprogs",
		"apt-get": "apt", "dpkg": "dpkg", "modprobe": "kmod", "depmod": "kmod",
	} {
		testutil.RequireCommand(t, cmd, pkg)
	}
	if static, err := vm.IsStatic(vm.BusyboxPath); err != nil || !static {
		testutil.Missing(t, vm.BusyboxPath+" is missing or not static; install the Debian package busybox-static")
	}
	ctx := context.Background()
	start := time.Now()
	img, err := PrepareImage(ctx)
	if errors.Is(err, ErrNeedRoot) {
		testutil.Missing(t, err.Error()+"; run `make test` as root once")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("root image %s (kernel %s) ready in %s", img.Path, img.Kernel.Release, time.Since(start).Round(time.Millisecond))
	logs, err := logDir(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	m := &Machine{t: t, img: img, work: t.TempDir(), logs: logs}
	m.initrd = filepath.Join(m.work, "initramfs.cpio")
	if err := writeInitramfs(ctx, m.initrd, img.Kernel); err != nil {
		t.Fatal(err)
	}
	m.root = filepath.Join(m.work, "root.img")
	start = time.Now()
	if err := copySparse(ctx, m.root, img.Path); err != nil {
		t.Fatal(err)
	}
	t.Logf("root disk copied in %s: %s", time.Since(start).Round(time.Millisecond), m.root)
	return m
}

// copySparse copies an image keeping its holes (and sharing extents
// where the file system can).
func copySparse(ctx context.Context, dst, src string) error {
	out, err := exec.CommandContext(ctx, "cp", "--sparse=always", "--reflink=auto", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("boot: cp %s: %w: %s", src, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Image is the cached image the machine was copied from.
func (m *Machine) Image() *Image { return m.img }

// RootDisk is the host path of the machine's root disk (raw ext4).
func (m *Machine) RootDisk() string { return m.root }

// LogDir holds the console and results logs of every boot.
func (m *Machine) LogDir() string { return m.logs }

// AddDisk creates a sparse raw disk of sizeMiB and attaches it to every
// later boot as the next virtio disk: the first added is /dev/vdb, the
// second /dev/vdc. It returns the host path, which the test may read or
// prepare between boots (cryptsetup luksDump works on it on the host).
func (m *Machine) AddDisk(name string, sizeMiB int) string {
	m.t.Helper()
	if unsafeName.MatchString(name) || name == "" || name == "root" {
		m.t.Fatalf("boot: disk name %q: use letters, digits, '.', '_' or '-' (and not root)", name)
	}
	p := filepath.Join(m.work, "disk-"+name+".img")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		m.t.Fatalf("boot: add disk %s: %v", name, err)
	}
	if err := f.Truncate(int64(sizeMiB) << 20); err != nil {
		m.t.Fatal(err)
	}
	f.Close()
	m.disks = append(m.disks, p)
	return p
}

// GuestDevice is the guest's name for the i-th added disk (0 → /dev/vdb).
func GuestDevice(i int) string { return "/dev/vd" + string(rune('b'+i)) }

// prepareRoot replays the journal if a boot was cut off (debugfs does
// not), then applies the queued changes.
func (m *Machine) prepareRoot(ctx context.Context) error {
	if err := recoverJournal(ctx, m.root); err != nil {
		return err
	}
	return m.edit.apply(ctx, m.root)
}

// recoverJournal runs e2fsck when the file system was not cleanly
// unmounted (a timeout or a panic): it replays the journal.
func recoverJournal(ctx context.Context, image string) error {
	out, err := exec.CommandContext(ctx, "dumpe2fs", "-h", image).Output()
	if err != nil {
		return fmt.Errorf("boot: dumpe2fs -h %s: %w", image, err)
	}
	if !strings.Contains(string(out), "needs_recovery") {
		return nil
	}
	b, err := exec.CommandContext(ctx, "e2fsck", "-fy", image).CombinedOutput()
	// Exit status 1 means "errors corrected".
	if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 1) {
		return fmt.Errorf("boot: e2fsck -fy %s: %w\n%s", image, err, b)
	}
	return nil
}
