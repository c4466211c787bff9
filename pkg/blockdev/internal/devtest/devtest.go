// Package devtest holds the machine-facing helpers of the pkg/blockdev
// tests: sparse images, loop devices (pkg/loop), external tools as test
// oracles, mounts and swap, each undone by t.Cleanup. Every helper that
// needs root or a program goes through internal/testutil's gates.
package devtest

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/blockdev/signature"
	"github.com/atrest/atrest/pkg/loop"
)

// Packages names the Debian package of every program the tests run, for
// the gate's message (and .ci/run installs them all).
var Packages = map[string]string{
	"blkid": "util-linux", "wipefs": "util-linux", "sfdisk": "fdisk",
	"sgdisk": "gdisk", "mkfs.ext2": "e2fsprogs", "mkfs.ext3": "e2fsprogs",
	"mkfs.ext4": "e2fsprogs", "mkfs.xfs": "xfsprogs", "mkfs.btrfs": "btrfs-progs",
	"mkswap": "util-linux", "mkfs.vfat": "dosfstools", "mkfs.ntfs": "ntfs-3g",
	"mkfs.exfat": "exfatprogs", "mkfs.f2fs": "f2fs-tools", "pvcreate": "lvm2",
	"make-bcache": "bcache-tools", "xorriso": "xorriso", "cryptsetup": "cryptsetup-bin",
	"mdadm": "mdadm", "unshare": "util-linux",
}

// Image creates a sparse file of size bytes in a test temp dir.
func Image(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

// Attach binds path to a loop device (root-gated) and detaches it when the
// test ends.
func Attach(t testing.TB, path string, opts loop.Options) *loop.Device {
	t.Helper()
	testutil.RequireRoot(t)
	d, err := loop.Attach(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Detach() })
	return d
}

// Loop attaches a fresh sparse image of size bytes.
func Loop(t testing.TB, size int64) *loop.Device {
	t.Helper()
	testutil.RequireRoot(t)
	return Attach(t, Image(t, size), loop.Options{})
}

// PartScan turns on partition scanning for a loop device, so the kernel
// creates partition devices for the table written on it.
func PartScan(t testing.TB, dev string) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	info.Flags |= unix.LO_FLAGS_PARTSCAN
	if err := unix.IoctlLoopSetStatus64(int(f.Fd()), info); err != nil {
		t.Fatalf("set partscan on %s: %v", dev, err)
	}
}

// Run runs a program (gated on its presence) and returns its stdout; a
// non-zero exit fails the test with the program's output.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := RunStatus(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// RunStatus runs a program and returns its stdout and exit error, for
// oracles whose exit status means something (blkid exits 2 when it finds
// nothing).
func RunStatus(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	return RunIn(t, "", name, args...)
}

// RunIn is RunStatus with stdin.
func RunIn(t testing.TB, stdin, name string, args ...string) (string, error) {
	t.Helper()
	pkg := Packages[name]
	if pkg == "" {
		pkg = name
	}
	path := testutil.RequireCommand(t, name, pkg)
	cmd := exec.Command(path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// ExitCode is err's exit status, or -1.
func ExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Mount mounts dev (of type fstype) on a fresh directory and unmounts it at
// cleanup.
func Mount(t testing.TB, dev, fstype string) string {
	t.Helper()
	return MountData(t, dev, fstype, "")
}

// MountReadOnly is Mount read-only: the file system then writes nothing
// to the device by itself (ext4's lazy inode-table init and journal do),
// for tests that compare the device's bytes before and after.
func MountReadOnly(t testing.TB, dev, fstype string) string {
	t.Helper()
	return mount(t, dev, fstype, unix.MS_RDONLY, "")
}

// MountData is Mount with filesystem options (e.g. btrfs "device=...").
func MountData(t testing.TB, dev, fstype, data string) string {
	t.Helper()
	return mount(t, dev, fstype, 0, data)
}

func mount(t testing.TB, dev, fstype string, flags uintptr, data string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount(dev, dir, fstype, flags, data); err != nil {
		t.Fatalf("mount %s on %s: %v", dev, dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, 0) })
	return dir
}

// Swapon activates path (a swap device or file made with mkswap) and turns
// it off at cleanup.
func Swapon(t testing.TB, path string) {
	t.Helper()
	if err := swapCall(unix.SYS_SWAPON, path); err != nil {
		t.Fatalf("swapon %s: %v", path, err)
	}
	t.Cleanup(func() { swapCall(unix.SYS_SWAPOFF, path) })
}

func swapCall(trap uintptr, path string) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	if _, _, e := unix.Syscall(trap, uintptr(unsafe.Pointer(p)), 0, 0); e != 0 {
		return e
	}
	return nil
}

// ReadAll reads a whole file or device.
func ReadAll(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// CopySparse copies a device or file to a new sparse file, skipping
// all-zero 64 KiB blocks, and returns its path.
func CopySparse(t testing.TB, src string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(t.TempDir(), filepath.Base(src)+".copy")
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := io.ReadFull(in, buf)
		if n > 0 && !allZero(buf[:n]) {
			if _, err := out.WriteAt(buf[:n], off); err != nil {
				t.Fatal(err)
			}
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Truncate(off); err != nil {
		t.Fatal(err)
	}
	return dst
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Diff streams two equally sized files or devices and calls fn for every
// differing byte offset, stopping after limit differences.
func Diff(t testing.TB, a, b string, limit int, fn func(off int64, x, y byte)) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	var off int64
	for n := 0; ; {
		na, erra := io.ReadFull(fa, ba)
		nb, errb := io.ReadFull(fb, bb)
		if na != nb {
			t.Fatalf("%s and %s differ in size", a, b)
		}
		if !bytes.Equal(ba[:na], bb[:nb]) {
			for i := 0; i < na; i++ {
				if ba[i] != bb[i] {
					fn(off+int64(i), ba[i], bb[i])
					if n++; n >= limit {
						return
					}
				}
			}
		}
		off += int64(na)
		if erra != nil || errb != nil {
			return
		}
	}
}

// blkpg is the BLKPG ioctl, _IO(0x12, 105).
const blkpg = 0x1269

// AddPartition makes sure the kernel has partition number pno of the loop
// device dev over [start, start+length) bytes, and returns its path. It
// turns on partition scanning first, so a kernel that parses the table the
// test wrote creates the partition itself and every partition goes away
// with the loop device. The development and CI kernels parse no partition
// tables (CONFIG_MSDOS_PARTITION and CONFIG_EFI_PARTITION are off), so it
// then adds what is missing with BLKPG_ADD_PARTITION, as partx and addpart
// do.
func AddPartition(t testing.TB, dev string, pno int, start, length int64) string {
	t.Helper()
	PartScan(t, dev)
	name := dev + "p" + strconv.Itoa(pno)
	if _, err := os.Stat(name); err == nil {
		return name
	}
	if err := blkpgCall(dev, unix.BLKPG_ADD_PARTITION, unix.BlkpgPartition{Start: start, Length: length, Pno: int32(pno)}); err != nil {
		t.Fatalf("add partition %d to %s: %v", pno, dev, err)
	}
	t.Cleanup(func() { blkpgCall(dev, unix.BLKPG_DEL_PARTITION, unix.BlkpgPartition{Pno: int32(pno)}) })
	return name
}

func blkpgCall(dev string, op int32, p unix.BlkpgPartition) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	arg := unix.BlkpgIoctlArg{Op: op, Datalen: int32(unsafe.Sizeof(p)), Data: (*byte)(unsafe.Pointer(&p))}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), blkpg, uintptr(unsafe.Pointer(&arg))); e != 0 {
		return e
	}
	return nil
}

// WriteAt writes b at off into a file or device and syncs it.
func WriteAt(t testing.TB, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// InMagic reports whether byte offset off lies in a magic of sigs.
func InMagic(sigs []signature.Signature, off int64) bool {
	for _, s := range sigs {
		for _, m := range s.Magics {
			if off >= m.Offset && off < m.Offset+int64(len(m.Bytes)) {
				return true
			}
		}
	}
	return false
}
