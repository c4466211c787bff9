package luks2

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/luks2"
)

// TestLVMOverOldLUKS2IsAmbiguous: an LVM physical volume made (by the
// real pvcreate) where a LUKS2 volume was, over the primary header only,
// leaves a valid LUKS2 secondary behind. cryptsetup will not read or
// auto-recover it ("ambiguous signatures"); atrest neither reads it as a
// volume nor repairs the primary over the LVM label.
func TestLVMOverOldLUKS2IsAmbiguous(t *testing.T) {
	requireTier(t)
	testutil.RequireCommand(t, "pvcreate", "lvm2")
	path := loopDevice(t, 20*mib)
	cryptsetup(t, "", "luksFormat", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", keyFile(t, "old"), path)
	pv := loopDevice(t, 20*mib)
	lvm := func(args ...string) {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "LVM_SUPPRESS_FD_WARNINGS=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	lvm("pvcreate", "-ff", "-y", pv)
	t.Cleanup(func() { exec.Command("pvremove", "-ff", "-y", pv).Run() })
	label := make([]byte, 16<<10) // the label and the start of LVM's metadata area
	src, err := os.Open(pv)
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.ReadAt(label, 0)
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dst.WriteAt(label, 0); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}

	_, errOut, err := runCryptsetup("", "luksDump", path)
	if err == nil || !strings.Contains(errOut, "ambiguous signatures") {
		t.Fatalf("cryptsetup luksDump: %v %s (the oracle changed?)", err, errOut)
	}
	dev := openDev(t, path)
	if _, err := luks2.Read(ctx(t), dev); !errors.Is(err, luks2.ErrAmbiguousSignatures) || !strings.Contains(err.Error(), "LVM2_member") {
		t.Fatalf("Read: %v, want ErrAmbiguousSignatures naming LVM2_member", err)
	}
	if _, err := luks2.Repair(ctx(t), dev); !errors.Is(err, luks2.ErrAmbiguousSignatures) {
		t.Fatalf("Repair: %v", err)
	}
	got := make([]byte, len(label))
	if _, err := dev.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, label) {
		t.Fatal("Repair wrote over the LVM label")
	}
}
