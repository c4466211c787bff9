// Package guest holds helpers for tests that run inside the real-kernel VM
// guest (integration/vm): loop-backed disks, cryptsetup driven with key
// files (never keys in argv), ext4 file systems. Each helper fails the test
// with the command's output when something goes wrong, and undoes what it
// did when the test ends.
package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/internal/testutil/looptest"
	"github.com/atrest/atrest/pkg/loop"
	"github.com/atrest/atrest/pkg/secret"
)

// Disk returns a loop device over a fresh sparse file of sizeMiB.
func Disk(t testing.TB, sizeMiB int64) *loop.Device {
	t.Helper()
	return looptest.Disk(t, sizeMiB)
}

// Run runs a program with no standard input and returns its standard
// output; a failure fails the test with everything the program said.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := Try(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// Try runs a program like Run and returns its combined output and error.
func Try(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// KeyFile writes b to a private file and returns its path; cryptsetup
// reads passphrases from it (--key-file), never from argv.
func KeyFile(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// CheapKDF are luksFormat options for tests: PBKDF2 with 1000 iterations,
// as atrest uses for machine secrets. Default argon2id takes 10 s or more
// under emulation.
var CheapKDF = []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--hash", "sha256"}

// LUKSFormat formats dev as LUKS2 with cryptsetup, the passphrase in
// keyFile and a 4096-byte sector; extra options are appended.
func LUKSFormat(t testing.TB, dev, keyFile string, extra ...string) {
	t.Helper()
	args := append([]string{"luksFormat", "--type", "luks2", "--batch-mode", "--sector-size", "4096", "--key-file", keyFile}, CheapKDF...)
	args = append(args, extra...)
	Run(t, "cryptsetup", append(args, dev)...)
}

// Segment is the data segment of a LUKS2 header.
type Segment struct {
	// UUID is the header's UUID.
	UUID string
	// Offset is where data starts, in bytes.
	Offset uint64
	// SectorSize is the encryption sector size.
	SectorSize uint32
	// Encryption is the cipher spec.
	Encryption string
}

// LUKSSegment reads segment 0 of the LUKS2 header on dev through
// cryptsetup luksDump --dump-json-metadata.
func LUKSSegment(t testing.TB, dev string) Segment {
	t.Helper()
	var meta struct {
		Segments map[string]struct {
			Offset     string `json:"offset"`
			Encryption string `json:"encryption"`
			SectorSize uint32 `json:"sector_size"`
		} `json:"segments"`
	}
	if err := json.Unmarshal([]byte(Run(t, "cryptsetup", "luksDump", "--dump-json-metadata", dev)), &meta); err != nil {
		t.Fatalf("luksDump JSON: %v", err)
	}
	s, ok := meta.Segments["0"]
	if !ok {
		t.Fatal("LUKS2 header has no segment 0")
	}
	off, err := strconv.ParseUint(s.Offset, 10, 64)
	if err != nil {
		t.Fatalf("segment offset %q: %v", s.Offset, err)
	}
	uuid := strings.TrimSpace(Run(t, "cryptsetup", "luksUUID", dev))
	return Segment{UUID: uuid, Offset: off, SectorSize: s.SectorSize, Encryption: s.Encryption}
}

// VolumeKey unlocks dev's volume key with cryptsetup (luksDump
// --dump-volume-key into a file) and returns it; it is wiped when the test
// ends.
func VolumeKey(t testing.TB, dev, keyFile string) *secret.Key {
	t.Helper()
	out := filepath.Join(t.TempDir(), "volume-key")
	Run(t, "cryptsetup", "luksDump", "--dump-volume-key", "--batch-mode", "--key-file", keyFile, "--volume-key-file", out, dev)
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(out)
	defer f.Close()
	k, err := secret.Read(f, 512, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

// Mkfs makes an ext4 file system on dev with e2fsprogs' mke2fs.
func Mkfs(t testing.TB, dev string) {
	t.Helper()
	Run(t, "mke2fs", "-q", "-F", "-t", "ext4", dev)
}

// Mount mounts the ext4 file system on dev at a fresh directory and
// returns it; it is unmounted when the test ends if still mounted.
func Mount(t testing.TB, dev string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount(dev, dir, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s: %v", dev, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, 0) })
	return dir
}

// Unmount unmounts dir.
func Unmount(t testing.TB, dir string) {
	t.Helper()
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatalf("umount %s: %v", dir, err)
	}
}
