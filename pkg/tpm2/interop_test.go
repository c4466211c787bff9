package tpm2

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/swtpmtest"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

// The interop tests use Debian's own tools as the oracle, on LUKS2 image
// files (no device-mapper): cryptsetup makes the image, systemd-cryptenroll
// enrolls a TPM2 keyslot through the swtpm TCTI, cryptsetup's systemd-tpm2
// plugin validates and dumps atrest's tokens.

const unlockKey = "interop passphrase"

// newImage formats a LUKS2 image with cryptsetup, keyslot 0 holding
// unlockKey (also in the returned key file).
func newImage(t *testing.T) (img, keyFile string) {
	t.Helper()
	cs := testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	dir := t.TempDir()
	img, keyFile = filepath.Join(dir, "img"), filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte(unlockKey), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	run(t, nil, cs, "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--key-file", keyFile, img)
	return img, keyFile
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func readHeader(t *testing.T, img string, writable bool) (*luks2.File, *luks2.Header) {
	t.Helper()
	dev, err := luks2.OpenFile(img, writable)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	h, err := luks2.Read(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	return dev, h
}

// volumeKey opens keyslot 0 with unlockKey.
func volumeKey(t *testing.T, dev *luks2.File, h *luks2.Header) *secret.Key {
	t.Helper()
	vk, err := h.OpenKeyslot(dev, 0, key(t, unlockKey))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vk.Wipe)
	return vk
}

func tpmToken(t *testing.T, h *luks2.Header) (int, *Token) {
	t.Helper()
	for _, id := range h.TokenIDs() {
		if h.Tokens[id].Type == TokenType {
			tok, err := ParseToken(h.Tokens[id].JSON())
			if err != nil {
				t.Fatalf("parse token %d: %v\n%s", id, err, h.Tokens[id].JSON())
			}
			return id, tok
		}
	}
	t.Fatal("no systemd-tpm2 token in the header")
	return 0, nil
}

// TestSystemdEnrollsAtrestOpens: systemd-cryptenroll seals through the
// swtpm TCTI; atrest parses the token, computes the same policy digest,
// unseals, and opens the keyslot (digest verified) to the same volume key.
func TestSystemdEnrollsAtrestOpens(t *testing.T) {
	enroll := testutil.RequireCommand(t, "systemd-cryptenroll", "systemd")
	for _, withPIN := range []bool{false, true} {
		name := map[bool]string{false: "pcr7", true: "pcr7+pin"}[withPIN]
		t.Run(name, func(t *testing.T) {
			sw, tp := openSwtpm(t)
			extendPCR(t, tp, 7, "secure boot state")
			img, keyFile := newImage(t)
			args := []string{"--unlock-key-file=" + keyFile, "--tpm2-device=" + sw.Device, "--tpm2-pcrs=7"}
			var env []string
			const pin = "2468"
			if withPIN {
				args = append(args, "--tpm2-with-pin=yes")
				env = []string{"NEWPIN=" + pin}
			}
			// swtpm serves one connection at a time: let systemd have it.
			tp.Close()
			run(t, env, enroll, append(args, img)...)
			tp = reopen(t, sw)

			dev, h := readHeader(t, img, false)
			_, tok := tpmToken(t, h)
			if tok.Bank != SHA256 || tok.PrimaryAlg != ECC || tok.PIN != withPIN || len(tok.PCRs) != 1 || tok.PCRs[0] != 7 {
				t.Fatalf("systemd's token parsed as %+v", tok)
			}
			values, err := tp.ReadPCRs(SHA256, []int{7})
			if err != nil {
				t.Fatal(err)
			}
			want, err := PolicyDigest(SHA256, []int{7}, values, withPIN)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(want, tok.PolicyHash) {
				t.Fatalf("atrest's policy digest %x, systemd's tpm2-policy-hash %x", want, tok.PolicyHash)
			}
			// atrest writes the same JSON systemd wrote.
			again, err := tok.JSON()
			if err != nil {
				t.Fatal(err)
			}
			if id, _ := tpmToken(t, h); !bytes.Equal(again, h.Tokens[id].JSON()) {
				t.Errorf("re-encoded token differs from systemd's:\n%s\n%s", again, h.Tokens[id].JSON())
			}

			var pinKey *secret.Key
			if withPIN {
				pinKey = key(t, pin)
			}
			sec, err := tp.Unseal(&tok.Sealed, pinKey)
			if err != nil {
				t.Fatalf("unseal systemd's blob: %v", err)
			}
			defer sec.Wipe()
			pass, err := Passphrase(sec)
			if err != nil {
				t.Fatal(err)
			}
			defer pass.Wipe()
			vk, err := h.OpenKeyslot(dev, tok.Keyslot, pass)
			if err != nil {
				t.Fatalf("open systemd's TPM2 keyslot %d: %v", tok.Keyslot, err)
			}
			defer vk.Wipe()
			if !vk.Equal(volumeKey(t, dev, h)) {
				t.Fatal("the TPM2 keyslot's volume key differs from keyslot 0's")
			}

			extendPCR(t, tp, 7, "another boot")
			if _, err := tp.Unseal(&tok.Sealed, pinKey); !errors.Is(err, ErrPCRMismatch) {
				t.Fatalf("unseal systemd's blob after PCR 7 changed: %v, want ErrPCRMismatch", err)
			}
		})
	}
}

// TestAtrestEnrollsSystemdReads: atrest seals, adds a keyslot and a
// systemd-tpm2 token with pkg/luks2; cryptsetup's systemd plugin validates
// and dumps the token, systemd-cryptenroll lists the keyslot as tpm2, and
// cryptsetup opens the keyslot with the passphrase systemd derives from
// the secret. (systemd unsealing the blob itself needs /dev/tpmrm0: the
// real-kernel tier.)
func TestAtrestEnrollsSystemdReads(t *testing.T) {
	cs := testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	enroll := testutil.RequireCommand(t, "systemd-cryptenroll", "systemd")
	const plugin = "/lib/x86_64-linux-gnu/cryptsetup/libcryptsetup-token-systemd-tpm2.so"
	if _, err := os.Stat(plugin); err != nil {
		testutil.Missing(t, "systemd's cryptsetup token plugin "+plugin+" is missing (Debian package systemd-cryptsetup or systemd)")
	}
	sw, tp := openSwtpm(t)
	extendPCR(t, tp, 7, "secure boot state")
	img, _ := newImage(t)
	dev, h := readHeader(t, img, true)
	vk := volumeKey(t, dev, h)

	sec, res := seal(t, tp, SealOptions{PCRs: []int{7}})
	pass, err := Passphrase(sec)
	if err != nil {
		t.Fatal(err)
	}
	defer pass.Wipe()
	u, err := h.Begin()
	if err != nil {
		t.Fatal(err)
	}
	slot, err := u.AddKeyslot(vk, pass, luks2.KeyslotOptions{Slot: luks2.AnySlot, KDF: kdf.Platform()})
	if err != nil {
		t.Fatal(err)
	}
	tok := &Token{Keyslot: slot, Sealed: res.Sealed}
	js, err := tok.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.SetToken(luks2.AnyToken, js); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(context.Background(), dev); err != nil {
		t.Fatal(err)
	}
	dev.Close()

	dump := run(t, nil, cs, "luksDump", img)
	// The plugin's dump (tpm2-util's field names) appears only when its
	// validate accepted the token.
	for _, want := range []string{"systemd-tpm2", "tpm2-hash-pcrs:   7", "tpm2-pcr-bank:    sha256", "tpm2-primary-alg: ecc", "tpm2-pin:         false", "tpm2-policy-hash:"} {
		if !strings.Contains(dump, want) {
			t.Errorf("cryptsetup luksDump does not show %q:\n%s", want, dump)
		}
	}
	list := run(t, nil, enroll, img)
	t.Logf("cryptsetup luksDump:\n%s\nsystemd-cryptenroll:\n%s", dump, list)
	if !regexp.MustCompile(`(?m)^\s*` + strconv.Itoa(slot) + `\s+tpm2\s*$`).MatchString(list) {
		t.Errorf("systemd-cryptenroll does not list a tpm2 keyslot:\n%s", list)
	}
	// The keyslot opens in cryptsetup with systemd's passphrase.
	pf := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pf, []byte(base64.StdEncoding.EncodeToString(sec.Bytes())), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, nil, cs, "open", "--test-passphrase", "--key-slot", strconv.Itoa(slot), "--key-file", pf, img)

	// tpm2-tss, the library systemd unseals with, loads atrest's blob under
	// a primary key it makes from systemd's template and unseals it through
	// PolicyPCR sha256:7 (tpm2-tools, through the same swtpm TCTI).
	testutil.RequireCommand(t, "tpm2_unseal", "tpm2-tools")
	tp.Close()
	dir := t.TempDir()
	n := 2 + int(binary.BigEndian.Uint16(res.Blob))
	for name, b := range map[string][]byte{"priv": res.Blob[:n], "pub": res.Blob[n:]} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tcti := []string{"-T", sw.Device}
	f := func(name string) string { return filepath.Join(dir, name) }
	for _, c := range [][]string{
		{"tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "ecc256:null:aes128cfb",
			"-a", "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth", "-c", f("primary.ctx")},
		{"tpm2_flushcontext", "-t"}, // swtpm has no resource manager
		{"tpm2_load", "-C", f("primary.ctx"), "-u", f("pub"), "-r", f("priv"), "-c", f("sealed.ctx")},
		{"tpm2_flushcontext", "-t"},
		{"tpm2_unseal", "-c", f("sealed.ctx"), "-p", "pcr:sha256:7", "-o", f("secret")},
	} {
		run(t, nil, c[0], append(tcti, c[1:]...)...)
	}
	got, err := secret.Read(mustOpen(t, f("secret")), 64, false)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Wipe()
	if !got.Equal(sec) {
		t.Fatal("tpm2_unseal returned another secret than atrest sealed")
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func reopen(t *testing.T, sw *swtpmtest.TPM) *TPM {
	t.Helper()
	tp, err := Open(sw.Device)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}
