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
	return CheckFS("ext4", plain, dir, name, want)
}

// CheckFS is CheckExtFS for a file system of type fs: ext2/3/4 as there;
// btrfs checked with `btrfs check --readonly` and the file read back with
// `btrfs restore`; XFS checked with `xfs_repair -n` (xfsprogs has no
// offline reader of a file's bytes: the caller's byte comparison of the
// whole file system covers the file).
func CheckFS(fs string, plain []byte, dir, name string, want []byte) error {
	img := filepath.Join(dir, "plain.img")
	if err := os.WriteFile(img, plain, 0o600); err != nil {
		return err
	}
	defer os.Remove(img)
	out := filepath.Join(dir, "read-back")
	defer os.RemoveAll(out)
	got := out // the file read back, "" for none
	var steps [][]string
	switch fs {
	case "xfs":
		steps, got = [][]string{{"xfs_repair", "-n", "-f", img}}, ""
	case "btrfs":
		if err := os.Mkdir(out, 0o700); err != nil {
			return err
		}
		steps, got = [][]string{{"btrfs", "check", "--readonly", img}, {"btrfs", "restore", img, out}}, filepath.Join(out, name)
	default:
		steps = [][]string{{"e2fsck", "-fn", img}, {"debugfs", "-R", "dump " + name + " " + out, img}}
	}
	for _, st := range steps {
		if o, err := exec.Command(st[0], st[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s %s: %v\n%s", st[0], st[1], err, o)
		}
	}
	if got == "" {
		return nil
	}
	if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, want) {
		return fmt.Errorf("%s read back differs (%v)", name, err)
	}
	return nil
}
