package unlock

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/integration/vm/guest"
	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/secret"
)

// volume is a cryptsetup-formatted LUKS2 volume on a loop device.
type volume struct {
	dev     string
	keyFile string
	seg     guest.Segment
	key     *secret.Key
}

func newVolume(t *testing.T, sizeMiB int64) *volume {
	t.Helper()
	testutil.RequireDeviceMapper(t)
	testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	d := guest.Disk(t, sizeMiB)
	v := &volume{dev: d.Path, keyFile: guest.KeyFile(t, []byte("correct horse battery staple"))}
	guest.LUKSFormat(t, v.dev, v.keyFile)
	v.seg = guest.LUKSSegment(t, v.dev)
	v.key = guest.VolumeKey(t, v.dev, v.keyFile)
	return v
}

// open maps v with pkg/dmcrypt the way atrest will once the LUKS2 layer
// has recovered the volume key; the mapping is closed when the test ends.
func (v *volume) open(t *testing.T, name string, flags dmcrypt.Flag) *dmcrypt.Mapping {
	t.Helper()
	m, err := dmcrypt.Open(dmcrypt.Params{
		Name: name, UUID: v.seg.UUID, Device: v.dev,
		OffsetSectors: v.seg.Offset / 512, Cipher: v.seg.Encryption,
		Key: v.key, SectorSize: v.seg.SectorSize, Flags: flags,
	})
	if err != nil {
		t.Fatalf("dmcrypt.Open: %v", err)
	}
	t.Cleanup(func() { _ = dmcrypt.Close(context.Background(), name) })
	return m
}

func closeT(t *testing.T, name string) {
	t.Helper()
	if err := dmcrypt.Close(context.Background(), name); err != nil {
		t.Fatalf("dmcrypt.Close: %v", err)
	}
}

func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}

// The two implementations read each other's data: what cryptsetup wrote,
// pkg/dmcrypt reads; what pkg/dmcrypt wrote, cryptsetup reads.
func TestCryptsetupAndDmcryptReadEachOther(t *testing.T) {
	v := newVolume(t, 64)
	const size = 32 << 20

	byCryptsetup := pattern(1, size)
	guest.Run(t, "cryptsetup", "open", "--key-file", v.keyFile, v.dev, "cs")
	write(t, "/dev/mapper/cs", byCryptsetup)
	guest.Run(t, "cryptsetup", "close", "cs")

	m := v.open(t, "atrest-rw", 0)
	if !bytes.Equal(read(t, m.Path, size), byCryptsetup) {
		t.Fatal("pkg/dmcrypt reads other bytes than cryptsetup wrote")
	}
	byAtrest := pattern(2, size)
	write(t, m.Path, byAtrest)
	closeT(t, m.Name)

	guest.Run(t, "cryptsetup", "open", "--readonly", "--key-file", v.keyFile, v.dev, "cs")
	defer guest.Try("cryptsetup", "close", "cs")
	if !bytes.Equal(read(t, "/dev/mapper/cs", size), byAtrest) {
		t.Fatal("cryptsetup reads other bytes than pkg/dmcrypt wrote")
	}
	guest.Run(t, "cryptsetup", "close", "cs")

	m = v.open(t, "atrest-rw", 0)
	if !bytes.Equal(read(t, m.Path, size), byAtrest) {
		t.Fatal("data changed across close and reopen")
	}
}

// Administrators' tools see a LUKS2 mapping with the requested options and
// no key: dmsetup table --showkeys names a keyring key only.
func TestToolsSeeFlagsAndNoKey(t *testing.T) {
	v := newVolume(t, 24)
	flags := dmcrypt.AllowDiscards | dmcrypt.NoReadWorkqueue | dmcrypt.NoWriteWorkqueue
	m := v.open(t, "atrest-table", flags)

	table := guest.Run(t, "dmsetup", "table", "--showkeys", m.Name)
	for _, want := range []string{"crypt aes-xts-plain64 :64:logon:atrest:" + m.UUID, "sector_size:4096", "allow_discards", "no_read_workqueue", "no_write_workqueue"} {
		if !strings.Contains(table, want) {
			t.Errorf("dmsetup table --showkeys lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(strings.ToLower(table), hex.EncodeToString(v.key.Bytes())) {
		t.Fatalf("dmsetup table --showkeys shows the volume key:\n%s", table)
	}
	if uuid := strings.TrimSpace(guest.Run(t, "dmsetup", "info", "-c", "--noheadings", "-o", "uuid", m.Name)); uuid != m.UUID {
		t.Errorf("dm UUID %q, want %q", uuid, m.UUID)
	}
	status := guest.Run(t, "cryptsetup", "status", m.Name)
	for _, want := range []string{"type:    LUKS2", "key location: keyring", "sector size:  4096", "discards"} {
		if !strings.Contains(status, want) {
			t.Errorf("cryptsetup status lacks %q:\n%s", want, status)
		}
	}
}

// An ext4 file system on a pkg/dmcrypt mapping survives unmount, close,
// reopen and mount.
func TestExt4SurvivesCloseAndReopen(t *testing.T) {
	v := newVolume(t, 64)
	m := v.open(t, "atrest-ext4", dmcrypt.NoReadWorkqueue|dmcrypt.NoWriteWorkqueue)
	guest.Mkfs(t, m.Path)
	dir := guest.Mount(t, m.Path)
	content := pattern(3, 1<<20)
	if err := os.WriteFile(filepath.Join(dir, "payload"), content, 0o600); err != nil {
		t.Fatal(err)
	}
	guest.Unmount(t, dir)
	closeT(t, m.Name)

	m = v.open(t, "atrest-ext4", 0)
	dir = guest.Mount(t, m.Path)
	got, err := os.ReadFile(filepath.Join(dir, "payload"))
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("file after close and reopen: %v (intact: %v)", err, bytes.Equal(got, content))
	}
}

// Closing a mounted mapping fails with a clear error and leaves the file
// system working.
func TestCloseMountedFailsAndKeepsWorking(t *testing.T) {
	v := newVolume(t, 64)
	m := v.open(t, "atrest-busy", 0)
	guest.Mkfs(t, m.Path)
	dir := guest.Mount(t, m.Path)

	err := dmcrypt.Close(context.Background(), m.Name)
	var busy *dmcrypt.BusyError
	if !errors.Is(err, dmcrypt.ErrBusy) || !errors.As(err, &busy) {
		t.Fatalf("Close of a mounted mapping: %v, want a BusyError", err)
	}
	if len(busy.Mounts) != 1 || busy.Mounts[0] != dir || !strings.Contains(err.Error(), "mounted on "+dir) {
		t.Fatalf("the error does not say where it is mounted: %v (%+v)", err, busy)
	}
	if _, err := dmcrypt.Inspect(m.Name); err != nil {
		t.Fatalf("mapping gone after the refused Close: %v", err)
	}
	content := pattern(4, 64<<10)
	if err := os.WriteFile(filepath.Join(dir, "after"), content, 0o600); err != nil {
		t.Fatalf("file system broken after the refused Close: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "after")); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("file system broken after the refused Close: %v", err)
	}
	guest.Unmount(t, dir)
	closeT(t, m.Name)
}

// A key that cannot be the volume's key creates no mapping; a key of the
// right shape but the wrong value is for the LUKS2 digest to catch, and
// here only yields unreadable data.
func TestWrongKeyCreatesNoMapping(t *testing.T) {
	v := newVolume(t, 24)
	for name, k := range map[string][]byte{"zero": make([]byte, 64), "short": pattern(5, 31)} {
		key, err := secret.FromBytes(k)
		if err != nil {
			t.Fatal(err)
		}
		defer key.Wipe()
		_, err = dmcrypt.Open(dmcrypt.Params{Name: "atrest-wrong", UUID: v.seg.UUID, Device: v.dev,
			OffsetSectors: v.seg.Offset / 512, Key: key, SectorSize: 4096})
		if !errors.Is(err, dmcrypt.ErrKeyRejected) {
			t.Errorf("%s key: %v, want ErrKeyRejected", name, err)
		}
		if out := guest.Run(t, "dmsetup", "ls"); strings.Contains(out, "atrest-wrong") {
			t.Fatalf("%s key left a mapping:\n%s", name, out)
		}
	}
}
