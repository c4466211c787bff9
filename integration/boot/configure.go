package boot

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/atrest/atrest/integration/vm"
)

// rootFile is a file or symlink the image build puts into the tree.
type rootFile struct {
	path string
	perm os.FileMode
	data string
	link string // a symlink to link when set
}

// rootFiles make the debootstrap tree a node that boots headless from
// virtio disk 0: its fstab, a name, multi-user as the default target, a
// persistent journal (boot 2 can read boot 1's), stop timeouts short
// enough that a stuck shutdown ends inside a test's timeout, and no
// timers that would reach for a network the guest does not have.
var rootFiles = []rootFile{
	{path: "/etc/fstab", perm: 0o644, data: "# atrest boot tier: the root file system is virtio disk 0.\n" +
		"/dev/vda / ext4 rw,errors=remount-ro 0 1\n"},
	{path: "/etc/hostname", perm: 0o644, data: "atrest-node\n"},
	{path: "/etc/hosts", perm: 0o644, data: "127.0.0.1 localhost\n127.0.1.1 atrest-node\n::1 localhost ip6-localhost ip6-loopback\n"},
	{path: "/etc/systemd/system/default.target", link: "/lib/systemd/system/multi-user.target"},
	{path: "/etc/systemd/journald.conf.d/atrest-boot.conf", perm: 0o644, data: "[Journal]\nStorage=persistent\n"},
	{path: "/etc/systemd/system.conf.d/atrest-boot.conf", perm: 0o644, data: "[Manager]\nShowStatus=yes\nDefaultTimeoutStopSec=30s\n"},
	{path: "/etc/systemd/system/apt-daily.timer", link: "/dev/null"},
	{path: "/etc/systemd/system/apt-daily-upgrade.timer", link: "/dev/null"},
	{path: "/etc/systemd/system/getty@tty1.service", link: "/dev/null"},
}

// configureRoot writes rootFiles, drops what a test node never reads
// (downloaded packages, manual pages, translations) and installs the
// guest kernel's modules so that udev and systemd-cryptsetup can load
// dm-crypt and friends on demand.
func configureRoot(ctx context.Context, root string, k *vm.Kernel) error {
	for _, f := range rootFiles {
		p := filepath.Join(root, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("boot: %w", err)
		}
		_ = os.Remove(p)
		var err error
		if f.link != "" {
			err = os.Symlink(f.link, p)
		} else if err = os.WriteFile(p, []byte(f.data), f.perm); err == nil {
			err = os.Chmod(p, f.perm)
		}
		if err != nil {
			return fmt.Errorf("boot: %w", err)
		}
	}
	debs, _ := filepath.Glob(filepath.Join(root, "var/cache/apt/archives/*.deb"))
	for _, d := range debs {
		_ = os.Remove(d)
	}
	for _, d := range []string{"usr/share/man", "usr/share/locale"} {
		_ = os.RemoveAll(filepath.Join(root, d))
	}
	return installModules(ctx, root, k)
}

// installModules copies moduleDirs and the index files of the kernel's
// module tree into the image and rebuilds modules.dep for that subset.
func installModules(ctx context.Context, root string, k *vm.Kernel) error {
	src := filepath.Join(k.Root, "lib", "modules", k.Release)
	dst := filepath.Join(root, "usr", "lib", "modules", k.Release)
	ents, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	for _, e := range ents {
		if e.Type().IsRegular() {
			if err := copyFile(filepath.Join(dst, e.Name()), filepath.Join(src, e.Name())); err != nil {
				return err
			}
		}
	}
	for _, d := range moduleDirs {
		if err := copyTree(filepath.Join(dst, d), filepath.Join(src, d)); err != nil {
			return err
		}
	}
	cmd := exec.CommandContext(ctx, "depmod", "-b", root, k.Release)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("boot: depmod -b %s %s: %w: %s", root, k.Release, err, bytes.TrimSpace(out))
	}
	return nil
}

// copyTree copies the directories and regular files below src to dst.
func copyTree(dst, src string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("boot: %w", err)
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return fmt.Errorf("boot: %w", err)
			}
		case d.Type().IsRegular():
			return copyFile(target, p)
		}
		return nil
	})
}

// copyFile copies the regular file src to dst with src's permissions.
func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("boot: copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	return nil
}
