// Package luks2 holds the loop-device tier of the LUKS2 engine's proof:
// cryptsetup 2.6 (Debian's cryptsetup-bin) is the oracle for everything
// atrest writes and reads, and anatol/luks.go a second independent reader.
// Every test needs root and real loop devices; passphrases reach cryptsetup
// through key files, never argv.
package luks2

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/loop"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

const mib = 1 << 20

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// requireTier gates a test on root, loop devices and cryptsetup.
func requireTier(t testing.TB) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
}

// loopDevice attaches a fresh sparse file of size bytes to a loop device
// and returns its path; the test's cleanup detaches it.
func loopDevice(t testing.TB, size int64) string {
	t.Helper()
	return loopDeviceIn(t, t.TempDir(), size)
}

// loopDeviceIn is loopDevice with the backing file in dir.
func loopDeviceIn(t testing.TB, dir string, size int64) string {
	t.Helper()
	backing := filepath.Join(dir, "disk.img")
	t.Cleanup(func() { os.Remove(backing) })
	f, err := os.Create(backing)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d, err := loop.Attach(backing, loop.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Detach() })
	return d.Path
}

// keyFile writes a passphrase to a 0600 file for cryptsetup --key-file.
func keyFile(t testing.TB, passphrase string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, []byte(passphrase), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func key(t testing.TB, s string) *secret.Key {
	t.Helper()
	k, err := secret.FromBytes([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

// cryptsetup runs cryptsetup in batch mode with no stdin unless given, and
// returns stdout; a failure fails the test.
func cryptsetup(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := runCryptsetup(stdin, args...)
	if err != nil {
		t.Fatalf("cryptsetup %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func runCryptsetup(stdin string, args ...string) (string, string, error) {
	cmd := exec.Command("cryptsetup", append([]string{"--batch-mode"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// dumpVolumeKey asks cryptsetup for the volume key (luksDump
// --dump-volume-key) using the passphrase in keyfile.
func dumpVolumeKey(t testing.TB, dev, keyfile string) []byte {
	t.Helper()
	out := cryptsetup(t, "", "luksDump", "--dump-volume-key", "--key-file", keyfile, dev)
	i := strings.Index(out, "MK dump:")
	if i < 0 {
		t.Fatalf("no MK dump in:\n%s", out)
	}
	h := strings.Join(strings.Fields(out[i+len("MK dump:"):]), "")
	vk, err := hex.DecodeString(h)
	if err != nil {
		t.Fatalf("volume key dump %q: %v", h, err)
	}
	return vk
}

func openDev(t testing.TB, path string) *luks2.File {
	t.Helper()
	d, err := luks2.OpenFile(path, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func read(t testing.TB, d luks2.Reader) *luks2.Header {
	t.Helper()
	h, err := luks2.Read(ctx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// smallArgon2 keeps Argon2 cheap in tests: 4 passes over 32 KiB.
func smallArgon2(typ kdf.Type) kdf.Params {
	return kdf.Params{Type: typ, Time: 4, Memory: 32, CPUs: 1}
}

var argon2Args = []string{"--pbkdf-memory", "32", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"}
