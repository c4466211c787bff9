package boot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/atrest/atrest/integration/vm"
)

// Packages are installed on top of debootstrap's minbase variant: systemd
// as init with udev (which loads dm-crypt on demand), dbus as on a real
// node, cryptsetup and dmsetup, e2fsprogs and util-linux for fstab mounts,
// procps to look around.
var Packages = []string{
	"systemd", "systemd-sysv", "udev", "dbus", "kmod",
	"cryptsetup-bin", "dmsetup", "e2fsprogs", "util-linux", "mount", "procps",
}

// moduleDirs are the parts of the kernel's module tree the image carries
// (about 65 MB of 400): block devices, device-mapper, crypto, file
// systems, virtio. modules.dep is rebuilt for them with depmod.
var moduleDirs = []string{
	"kernel/arch", "kernel/block", "kernel/crypto", "kernel/fs", "kernel/lib",
	"kernel/mm", "kernel/virt",
	"kernel/drivers/block", "kernel/drivers/md", "kernel/drivers/virtio",
	"kernel/drivers/char", "kernel/drivers/crypto", "kernel/drivers/nvme",
	"kernel/drivers/firmware",
}

// imageSizeMiB is the root file system's size; the image file is sparse,
// so only what is written costs disk space and copy time.
const imageSizeMiB = 2048

// imageFormat changes whenever the build steps change in a way the key
// does not see, so that stale images are rebuilt.
const imageFormat = "1"

// ErrNeedRoot means the image is not cached and building it (debootstrap)
// needs root.
var ErrNeedRoot = errors.New("boot: building the root image with debootstrap needs root")

// Image is a cached root file system image and what boots it.
type Image struct {
	// Kernel is the guest kernel; its modules are in the image.
	Kernel *vm.Kernel
	// Path is the ext4 root image. It is shared: never write to it; a
	// Machine works on its own copy.
	Path string
	// Key identifies what went into the image.
	Key string
}

// PrepareImage returns the root image for the current guest kernel,
// building it the first time (debootstrap, about 2 minutes) under a lock
// that serialises concurrent test processes. An image whose inputs
// changed (packages, kernel ABI, build steps) is rebuilt and the old one
// removed.
func PrepareImage(ctx context.Context) (*Image, error) {
	k, err := vm.PrepareKernel(ctx)
	if err != nil {
		return nil, err
	}
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	images := filepath.Join(cache, "images")
	if err := os.MkdirAll(images, 0o755); err != nil {
		return nil, fmt.Errorf("boot: %w", err)
	}
	unlock, err := vm.LockFile(filepath.Join(images, ".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	key := imageKey(k.Release)
	dir := filepath.Join(images, Suite+"-"+key[:16])
	img := &Image{Kernel: k, Path: filepath.Join(dir, "root.img"), Key: key}
	if _, err := os.Stat(filepath.Join(dir, ".ready")); err == nil {
		return img, nil
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w (no image in %s yet)", ErrNeedRoot, images)
	}
	// A build that was killed (a test timeout) leaves its tree behind,
	// perhaps with proc still mounted in it; no build runs while we hold
	// the lock.
	stale, _ := filepath.Glob(filepath.Join(images, ".build-*"))
	for _, d := range stale {
		unmountUnder(d)
		_ = os.RemoveAll(d)
	}
	if err := buildImage(ctx, images, dir, k); err != nil {
		return nil, err
	}
	ents, _ := os.ReadDir(images)
	for _, e := range ents {
		if e.IsDir() && e.Name() != filepath.Base(dir) && !strings.HasPrefix(e.Name(), ".") {
			_ = os.RemoveAll(filepath.Join(images, e.Name()))
		}
	}
	return img, nil
}

// imageKey hashes everything that goes into an image.
func imageKey(release string) string {
	h := sha256.New()
	for _, part := range [][]string{
		{imageFormat, Suite, release},
		Packages, moduleDirs,
	} {
		fmt.Fprintf(h, "%q\n", part)
	}
	for _, f := range rootFiles {
		fmt.Fprintf(h, "%q %o %q\n", f.path, f.perm, f.data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// buildImage runs debootstrap in a temporary directory next to dir,
// configures the tree, turns it into an ext4 image and moves it in place.
func buildImage(ctx context.Context, images, dir string, k *vm.Kernel) error {
	tmp, err := os.MkdirTemp(images, ".build-")
	if err == nil {
		err = os.Chmod(tmp, 0o755)
	}
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	root := filepath.Join(tmp, "root")
	defer func() {
		unmountUnder(root)
		_ = os.RemoveAll(tmp)
	}()
	src, err := mirror(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	args := []string{"--variant=minbase", "--include=" + strings.Join(Packages, ","),
		"--components=main", Suite, root, src}
	cmd := exec.CommandContext(ctx, "debootstrap", args...)
	cmd.Stdin = nil
	if out, err := cmd.CombinedOutput(); err != nil {
		detail, _ := os.ReadFile(filepath.Join(root, "debootstrap", "debootstrap.log"))
		return fmt.Errorf("boot: debootstrap %s: %w\n%s\n%s", strings.Join(args, " "), err, tail(out, 20), tail(detail, 20))
	}
	debootstrapTime := time.Since(start)
	if err := configureRoot(ctx, root, k); err != nil {
		return err
	}
	raw := filepath.Join(tmp, "root.img")
	if err := makeExt4(ctx, raw, root, imageSizeMiB); err != nil {
		return err
	}
	unmountUnder(root)
	if err := os.RemoveAll(root); err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	info := fmt.Sprintf("suite %s, kernel %s, mirror %s\npackages %s\ndebootstrap %s, image built %s\n",
		Suite, k.Release, src, strings.Join(Packages, " "), debootstrapTime.Round(time.Second), time.Now().UTC().Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(tmp, ".ready"), []byte(info), 0o644); err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	return nil
}

// makeExt4 writes a sparse ext4 image of sizeMiB holding the tree at
// root, owners and modes kept (mke2fs -d, no mount needed).
func makeExt4(ctx context.Context, image, root string, sizeMiB int) error {
	f, err := os.Create(image)
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	err = f.Truncate(int64(sizeMiB) << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	args := []string{"-q", "-F", "-t", "ext4", "-L", "atrest-root", "-d", root, image}
	if out, err := exec.CommandContext(ctx, "mke2fs", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("boot: mke2fs %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// unmountUnder lazily unmounts anything a failed debootstrap left mounted
// below dir (proc, sys), deepest first, so that removing dir cannot reach
// into the host's /proc or /sys.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var mounts []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			mounts = append(mounts, f[1])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = exec.Command("umount", "-l", mounts[i]).Run()
	}
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
