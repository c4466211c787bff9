package tpmguest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/integration/vm/guest"
	"github.com/atrest/atrest/internal/cli"
	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/tpm2"
)

func requireTPM(t *testing.T) {
	t.Helper()
	testutil.RequireDeviceMapper(t)
	if _, err := os.Stat(tpm2.DefaultDevice); err != nil {
		testutil.Missing(t, "no kernel TPM ("+tpm2.DefaultDevice+"): the VM guest has one (swtpm behind tpm-tis)")
	}
}

// pkg/tpm2 seals and unseals over the kernel's resource manager.
func TestSealUnsealOverTPMRM0(t *testing.T) {
	requireTPM(t)
	tp, err := tpm2.Open("auto")
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	sec, res, err := tp.Seal(tpm2.SealOptions{PCRs: []int{7}})
	if err != nil {
		t.Fatalf("seal over %s: %v", tpm2.DefaultDevice, err)
	}
	defer sec.Wipe()
	got, err := tp.Unseal(&res.Sealed, nil)
	if err != nil {
		t.Fatalf("unseal over %s: %v", tpm2.DefaultDevice, err)
	}
	defer got.Wipe()
	if !got.Equal(sec) {
		t.Fatal("unsealed other bytes than were sealed")
	}
	t.Logf("sealed to %s PCR 7 (unenforced: %v)", res.Bank, res.Unenforced)
}

// atrest formats a volume on a machine with a TPM and no kms configured
// (kms: tpm), enrolls a TPM keyslot, opens the volume and writes through
// dm-crypt; cryptsetup open --token-only, with systemd 252's own
// systemd-tpm2 token plugin, opens it and reads the same bytes.
func TestSystemdTokenPluginOpensAtrestVolume(t *testing.T) {
	requireTPM(t)
	testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "atrest.yaml")
	doc := fmt.Sprintf("local:\n  keystore: %s/kek\nstate_dir: %s/state\nrecovery:\n  mode: none\n", dir, dir)
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	atrest := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := cli.Main(append([]string{"atrest", "-c", cfg}, args...), strings.NewReader(""), &out, &errb); code != 0 {
			t.Fatalf("atrest %v: exit %d\n%s%s", args, code, out.String(), errb.String())
		}
		return out.String()
	}
	d := guest.Disk(t, 64)
	atrest("format", d.Path, "--name", "tvol")
	var st struct {
		Volumes []struct {
			KMS struct {
				Backend string `json:"backend"`
			} `json:"kms"`
		} `json:"volumes"`
	}
	if err := json.Unmarshal([]byte(atrest("-o", "json", "status", d.Path)), &st); err != nil || len(st.Volumes) != 1 || st.Volumes[0].KMS.Backend != "tpm" {
		t.Fatalf("format on a machine with a TPM and no kms configured: %+v %v, want kms tpm", st, err)
	}
	atrest("tpm", "enroll", d.Path, "--pcrs", "7")

	data := make([]byte, 1<<20)
	_, _ = rand.NewChaCha8([32]byte{7}).Read(data)
	atrest("open", d.Path)
	writeAll(t, "/dev/mapper/tvol", data)
	atrest("close", "tvol")

	dump := guest.Run(t, "cryptsetup", "luksDump", d.Path)
	if !strings.Contains(dump, "systemd-tpm2") || !strings.Contains(dump, "tpm2-hash-pcrs:   7") {
		debug, _ := guest.Try("cryptsetup", "--debug", "luksDump", d.Path)
		var why []string
		for _, l := range strings.Split(debug, "\n") {
			if strings.Contains(strings.ToLower(l), "token") || strings.Contains(l, "dlopen") || strings.Contains(l, ".so") {
				why = append(why, l)
			}
		}
		t.Fatalf("luksDump does not show the token through systemd's plugin (cryptsetup --debug says:\n%s)", strings.Join(why, "\n"))
	}
	guest.Run(t, "cryptsetup", "open", "--token-only", "--token-type", "systemd-tpm2", d.Path, "sysd")
	defer guest.Try("cryptsetup", "close", "sysd")
	got := make([]byte, len(data))
	f, err := os.Open("/dev/mapper/sysd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("cryptsetup, opening with systemd's systemd-tpm2 token, reads other bytes than atrest wrote")
	}
}

func writeAll(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}
