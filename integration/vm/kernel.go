package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"
)

// CacheEnv overrides the cache directory.
const CacheEnv = "ATREST_VM_CACHE"

// CacheDir is where the guest kernel and the run logs are kept:
// $ATREST_VM_CACHE, or atrest/vm under the user's cache directory
// (~/.cache/atrest/vm for root on Debian; $TMPDIR/atrest-vm-cache
// without a home directory).
func CacheDir() (string, error) {
	if d := os.Getenv(CacheEnv); d != "" {
		return filepath.Abs(d)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		// No HOME (some CI runners): still once per machine.
		return filepath.Join(os.TempDir(), "atrest-vm-cache"), nil
	}
	return filepath.Join(base, "atrest", "vm"), nil
}

// Kernel is an unpacked Debian kernel package.
type Kernel struct {
	// Release is the kernel ABI, e.g. 6.1.0-48-amd64.
	Release string
	// Root holds the unpacked package (boot/, lib/modules/RELEASE/).
	Root string
	// Image is the bootable kernel image.
	Image string
}

// PrepareKernel returns the kernel linux-image-amd64 currently depends on,
// downloading and unpacking it into the cache the first time. The ABI is
// resolved, never pinned: it changes with Debian point releases. Callers
// in several processes may race; a lock file serialises them.
func PrepareKernel(ctx context.Context) (*Kernel, error) {
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	kdir := filepath.Join(cache, "kernel")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	unlock, err := lockFile(filepath.Join(kdir, ".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	release, err := resolveRelease(ctx)
	if err != nil {
		return nil, err
	}
	k := &Kernel{Release: release, Root: filepath.Join(kdir, release)}
	k.Image = filepath.Join(k.Root, "boot", "vmlinuz-"+release)
	if _, err := os.Stat(filepath.Join(k.Root, ".ready")); err == nil {
		return k, nil
	}
	if err := unpackKernel(ctx, kdir, release); err != nil {
		return nil, err
	}
	// Earlier ABIs are dead weight (400 MB each) once a newer one works.
	ents, _ := os.ReadDir(kdir)
	for _, e := range ents {
		if e.IsDir() && e.Name() != release {
			_ = os.RemoveAll(filepath.Join(kdir, e.Name()))
		}
	}
	return k, nil
}

var dependsRE = regexp.MustCompile(`(?m)^\s*Depends:\s*linux-image-(\d\S*-amd64)\s*$`)

// resolveRelease asks apt which kernel ABI linux-image-amd64 depends on,
// refreshing the package lists once if apt does not know.
func resolveRelease(ctx context.Context) (string, error) {
	var last error
	for attempt := 0; attempt < 2; attempt++ {
		if attempt == 1 {
			if err := aptUpdate(ctx); err != nil {
				return "", fmt.Errorf("vm: resolve the kernel: %v; apt-get update: %w", last, err)
			}
		}
		out, err := exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-amd64").CombinedOutput()
		if m := dependsRE.FindSubmatch(out); err == nil && m != nil {
			return string(m[1]), nil
		}
		last = fmt.Errorf("apt-cache depends linux-image-amd64: %v: %s", err, bytes.TrimSpace(out))
	}
	return "", fmt.Errorf("vm: resolve the kernel: %w", last)
}

func aptUpdate(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "apt-get", "update", "-qq")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// unpackKernel downloads linux-image-RELEASE, unpacks it with dpkg -x and
// runs depmod (the .deb ships no modules.dep), then moves it in place.
func unpackKernel(ctx context.Context, kdir, release string) error {
	tmp, err := os.MkdirTemp(kdir, ".tmp-"+release+"-")
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	defer os.RemoveAll(tmp)
	pkg := "linux-image-" + release
	download := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "download", "-qq", pkg)
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get download %s: %w: %s", pkg, err, bytes.TrimSpace(out))
		}
		return nil
	}
	if err := download(); err != nil {
		// The lists may name a version the archive has dropped.
		if uerr := aptUpdate(ctx); uerr != nil {
			return fmt.Errorf("vm: %v; apt-get update: %w", err, uerr)
		}
		if err := download(); err != nil {
			return fmt.Errorf("vm: %w", err)
		}
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("vm: apt-get download %s left %d packages", pkg, len(debs))
	}
	root := filepath.Join(tmp, "root")
	for _, args := range [][]string{
		{"dpkg", "-x", debs[0], root},
		{"depmod", "-b", root, release},
	} {
		if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("vm: %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
	}
	if _, err := os.Stat(filepath.Join(root, "boot", "vmlinuz-"+release)); err != nil {
		return fmt.Errorf("vm: %s has no kernel image: %w", pkg, err)
	}
	if err := os.WriteFile(filepath.Join(root, ".ready"), nil, 0o644); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	dst := filepath.Join(kdir, release)
	_ = os.RemoveAll(dst)
	if err := os.Rename(root, dst); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	return nil
}

// Modules resolves kernel module names (as modprobe takes them) to their
// files in load order, dependencies first, each once. Built-in modules
// need no file and are left out. modinfo's depends field misses soft
// dependencies (xts needs ecb); modprobe --show-depends does not.
func (k *Kernel) Modules(ctx context.Context, names ...string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		cmd := exec.CommandContext(ctx, "modprobe", "-d", k.Root, "-S", k.Release, "--show-depends", n)
		b, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
			}
			return nil, fmt.Errorf("vm: module %s of %s: %w", n, k.Release, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 || f[0] != "insmod" || seen[f[1]] {
				continue
			}
			seen[f[1]] = true
			out = append(out, f[1])
		}
	}
	return out, nil
}

// GuestPath maps a file of the unpacked package to its path in the guest.
func (k *Kernel) GuestPath(hostPath string) (string, error) {
	rel, err := filepath.Rel(k.Root, hostPath)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("vm: %s is not inside the kernel tree %s", hostPath, k.Root)
	}
	return "/" + rel, nil
}

// lockFile takes an exclusive flock on path and returns its release.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("vm: lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("vm: lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
