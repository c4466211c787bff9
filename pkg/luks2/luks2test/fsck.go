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
