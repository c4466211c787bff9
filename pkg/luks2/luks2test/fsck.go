package luks2test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// CheckExtFS checks plain, an ext2/3/4 file system image (a volume's data
// decrypted in userspace: the host tier has no device-mapper), with the
// e2fsprogs as oracles: `e2fsck -fn` finds it clean and `debugfs` reads
// the file name back as want. dir is a scratch directory.
func CheckExtFS(plain []byte, dir, name string, want []byte) error {
	img := filepath.Join(dir, "plain.img")
	if err := os.WriteFile(img, plain, 0o600); err != nil {
		return err
	}
	defer os.Remove(img)
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		return fmt.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	got := filepath.Join(dir, "read-back")
	defer os.Remove(got)
	if out, err := exec.Command("debugfs", "-R", "dump "+name+" "+got, img).CombinedOutput(); err != nil {
		return fmt.Errorf("debugfs dump %s: %v\n%s", name, err, out)
	}
	if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, want) {
		return fmt.Errorf("%s read back differs (%v)", name, err)
	}
	return nil
}

// CheckFS is CheckExtFS for a file system of type fs: ext2/3/4 as there;
// btrfs checked with `btrfs check --readonly` and the file read back with
// `btrfs restore`; XFS checked with `xfs_repair -n` (xfsprogs has no
// offline reader of a file's bytes: the caller's byte comparison of the
// whole file system covers the file).
func CheckFS(fs string, plain []byte, dir, name string, want []byte) error {
	if fs != "btrfs" && fs != "xfs" {
		return CheckExtFS(plain, dir, name, want)
	}
	img := filepath.Join(dir, "plain.img")
	if err := os.WriteFile(img, plain, 0o600); err != nil {
		return err
	}
	defer os.Remove(img)
	if fs == "xfs" {
		if out, err := exec.Command("xfs_repair", "-n", "-f", img).CombinedOutput(); err != nil {
			return fmt.Errorf("xfs_repair -n: %v\n%s", err, out)
		}
		return nil
	}
	if out, err := exec.Command("btrfs", "check", "--readonly", img).CombinedOutput(); err != nil {
		return fmt.Errorf("btrfs check --readonly: %v\n%s", err, out)
	}
	got := filepath.Join(dir, "restored")
	defer os.RemoveAll(got)
	if err := os.Mkdir(got, 0o700); err != nil {
		return err
	}
	if out, err := exec.Command("btrfs", "restore", img, got).CombinedOutput(); err != nil {
		return fmt.Errorf("btrfs restore: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(got, name)); err != nil || !bytes.Equal(b, want) {
		return fmt.Errorf("%s read back differs (%v)", name, err)
	}
	return nil
}
