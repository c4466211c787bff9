package dmcrypt

// Tests against the kernel's dm-crypt. The development and CI kernels have
// no device-mapper, so these skip there and run in the real-kernel VM tier
// (go test ./integration/vm), where a skip is a failure.

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/loop"
)

// backing returns a loop device over a fresh sizeMiB file.
func backing(t *testing.T, sizeMiB int64, opts loop.Options) *loop.Device {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, sizeMiB<<20); err != nil {
		t.Fatal(err)
	}
	d, err := loop.Attach(img, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Detach() })
	return d
}

// openT opens p and closes the mapping when the test ends.
func openT(t *testing.T, p Params) *Mapping {
	t.Helper()
	m, err := Open(p)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = Close(context.Background(), p.Name) })
	return m
}

func pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, _ = r.Read(b)
	return b
}

func writeAll(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}

func params(t *testing.T, name string, dev *loop.Device) Params {
	return Params{Name: name, UUID: testUUID, Device: dev.Path, OffsetSectors: 2048,
		Key: randomKey(t, 64), SectorSize: 4096, Flags: NoReadWorkqueue | NoWriteWorkqueue}
}

func TestOpenWriteCloseReopen(t *testing.T) {
	testutil.RequireDeviceMapper(t)
	dev := backing(t, 24, loop.Options{})
	p := params(t, "t-reopen", dev)
	m := openT(t, p)
	var st unix.Stat_t
	if err := unix.Stat(m.Path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != unix.Mkdev(m.Major, m.Minor) {
		t.Fatalf("%s is not the mapping's block device (%v)", m.Path, err)
	}
	data := pattern(1, 8<<20)
	writeAll(t, m.Path, 0, data)
	if err := Close(context.Background(), p.Name); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := Inspect(p.Name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after Close, Inspect: %v, want ErrNotFound", err)
	}
	if _, err := os.Lstat(m.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Close, %s still exists: %v", m.Path, err)
	}
	// The backing device holds ciphertext, 1 MiB (2048 sectors) in.
	if raw := readAll(t, dev.Path, 1<<20, 1<<20); bytes.Equal(raw, data[:1<<20]) {
		t.Fatal("plaintext found on the backing device")
	}

	m = openT(t, p)
	if got := readAll(t, m.Path, 0, len(data)); !bytes.Equal(got, data) {
		t.Fatal("data read after reopening differs from what was written")
	}
	if err := Close(context.Background(), p.Name); err != nil {
		t.Fatal(err)
	}

	// dm-crypt cannot tell a wrong key of the right size: the mapping
	// opens and reads noise. The LUKS2 digest check guards against this.
	p.Key = randomKey(t, 64)
	m = openT(t, p)
	if got := readAll(t, m.Path, 0, 1<<20); bytes.Equal(got, data[:1<<20]) {
		t.Fatal("another key decrypted the data")
	}
}

func TestTableCarriesFlagsAndNoKey(t *testing.T) {
	testutil.RequireDeviceMapper(t)
	dev := backing(t, 8, loop.Options{})
	p := params(t, "t-table", dev)
	p.Flags |= AllowDiscards
	m := openT(t, p)
	st, err := Inspect(p.Name)
	if err != nil {
		t.Fatal(err)
	}
	uuid, _ := DMUUID(testUUID, p.Name)
	if st.UUID != uuid || st.Path != m.Path || st.ReadOnly || st.Suspended || st.OpenCount != 0 {
		t.Fatalf("status %+v", st)
	}
	var ls unix.Stat_t
	if err := unix.Stat(dev.Path, &ls); err != nil {
		t.Fatal(err)
	}
	tab := st.Crypt
	if tab == nil {
		t.Fatal("no crypt table")
	}
	want := Table{Cipher: CipherAESXTSPlain64, KeySize: 64, KeyDescription: "logon:atrest:" + uuid,
		Device:        fmt.Sprintf("%d:%d", unix.Major(ls.Rdev), unix.Minor(ls.Rdev)),
		OffsetSectors: 2048, SizeSectors: 8*2048 - 2048, SectorSize: 4096,
		Flags: AllowDiscards | NoReadWorkqueue | NoWriteWorkqueue}
	if fmt.Sprint(*tab) != fmt.Sprint(want) {
		t.Fatalf("table\n%+v\nwant\n%+v", *tab, want)
	}

	// The raw table as the kernel reports it (what dmsetup table
	// --showkeys prints) names the key and does not contain it.
	hexKey := hex.EncodeToString(p.Key.Bytes())
	err = readTable(p.Name, func(_ target, params []byte) error {
		if bytes.Contains(bytes.ToLower(params), []byte(hexKey)) {
			return errors.New("the kernel table holds the key in hex")
		}
		if !bytes.Contains(params, []byte(":64:logon:atrest:")) {
			return fmt.Errorf("the table does not reference a logon key: %q", params)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The logon key did not stay usable in any keyring.
	keys, err := os.ReadFile("/proc/keys")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(keys), "\n") {
		if strings.Contains(line, "atrest:"+uuid) {
			f := strings.Fields(line)
			if len(f) > 1 && !strings.ContainsAny(f[1], "RDi") {
				t.Fatalf("the volume key is still live in a keyring: %s", line)
			}
		}
	}
}

func TestWrongKeyCreatesNoMapping(t *testing.T) {
	testutil.RequireDeviceMapper(t)
	dev := backing(t, 8, loop.Options{})
	for _, c := range []struct {
		name string
		n    int
		zero bool
	}{{"short", 16, false}, {"odd", 63, false}, {"zero", 64, true}} {
		t.Run(c.name, func(t *testing.T) {
			p := params(t, "t-wrongkey", dev)
			if c.zero {
				p.Key = key(t, make([]byte, c.n))
			} else {
				p.Key = randomKey(t, c.n)
			}
			if _, err := Open(p); !errors.Is(err, ErrKeyRejected) {
				t.Fatalf("Open: %v, want ErrKeyRejected", err)
			}
			if _, err := Inspect(p.Name); !errors.Is(err, ErrNotFound) {
				t.Fatalf("a mapping exists after a rejected key: %v", err)
			}
		})
	}
}

func TestKernelRefusalLeavesNothing(t *testing.T) {
	testutil.RequireDeviceMapper(t)
	// While another opener holds the backing device exclusively, the
	// kernel refuses the table after Open created the device; Open must
	// remove what it created.
	dev := backing(t, 8, loop.Options{})
	p := params(t, "t-refused", dev)
	excl, err := os.OpenFile(dev.Path, os.O_RDONLY|unix.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(p)
	excl.Close()
	if err == nil || !strings.Contains(err.Error(), "held exclusively") {
		t.Fatalf("Open of an exclusively held device: %v, want the kernel's refusal", err)
	}
	if _, err := Inspect(p.Name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a mapping is left after the kernel refused it: %v", err)
	}
	m := openT(t, p)
	if st, err := Inspect(p.Name); err != nil || st.ReadOnly {
		t.Fatalf("mapping after the refusal: %+v, %v", st, err)
	}
	writeAll(t, m.Path, 0, pattern(4, 4096))
}

func TestReadOnlyMapping(t *testing.T) {
	testutil.RequireDeviceMapper(t)
	dev := backing(t, 8, loop.Options{})
	p := params(t, "t-ro", dev)
	p.ReadOnly = true
	m := openT(t, p)
	if st, err := Inspect(p.Name); err != nil || !st.ReadOnly {
		t.Fatalf("read-only mapping: %+v, %v", st, err)
	}
	// Linux may grant the open; the write itself must fail.
	if f, err := os.OpenFile(m.Path, os.O_WRONLY|os.O_SYNC, 0); err == nil {
		_, werr := f.WriteAt(pattern(5, 4096), 0)
		f.Close()
		if werr == nil {
			t.Fatal("a read-only mapping accepted a write")
		}
	}
	readAll(t, m.Path, 0, 4096)
}

func TestExistingNameIsRefused(t *testing.T) {
	testutil.RequireDeviceMapper(t)
	dev := backing(t, 8, loop.Options{})
	other := backing(t, 8, loop.Options{})
	p := params(t, "t-dup", dev)
	m := openT(t, p)
	q := params(t, "t-dup", other)
	q.UUID = "11111111-2222-3333-4444-555555555555"
	if _, err := Open(q); !errors.Is(err, ErrExists) {
		t.Fatalf("second Open with the same name: %v, want ErrExists", err)
	}
	data := pattern(2, 4096)
	writeAll(t, m.Path, 0, data)
	if got := readAll(t, m.Path, 0, len(data)); !bytes.Equal(got, data) {
		t.Fatal("first mapping damaged by the refused second Open")
	}
}

func TestCloseBusyLeavesMappingWorking(t *testing.T) {
	testutil.RequireDeviceMapper(t)
	dev := backing(t, 8, loop.Options{})
	p := params(t, "t-busy", dev)
	m := openT(t, p)
	f, err := os.OpenFile(m.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = Close(context.Background(), p.Name)
	var busy *BusyError
	if !errors.Is(err, ErrBusy) || !errors.As(err, &busy) || busy.OpenCount < 1 {
		t.Fatalf("Close of an open mapping: %v, want a BusyError", err)
	}
	data := pattern(3, 64<<10)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatalf("mapping broken after the refused Close: %v", err)
	}
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("mapping broken after the refused Close: %v", err)
	}
	f.Close()
	if err := Close(context.Background(), p.Name); err != nil {
		t.Fatalf("Close once released: %v", err)
	}
	if err := Close(context.Background(), p.Name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Close: %v, want ErrNotFound", err)
	}
}

func TestExplicitSize(t *testing.T) {
	testutil.RequireDeviceMapper(t)
	dev := backing(t, 8, loop.Options{})
	p := params(t, "t-size", dev)
	p.SizeSectors = 4096
	openT(t, p)
	st, err := Inspect(p.Name)
	if err != nil || st.Crypt == nil || st.Crypt.SizeSectors != 4096 {
		t.Fatalf("Inspect: %+v, %v", st, err)
	}
	q := params(t, "t-size2", dev)
	q.SizeSectors = 4095 // not a whole number of 4096-byte sectors
	if _, err := Open(q); !errors.Is(err, ErrInvalidParams) {
		t.Fatalf("misaligned size: %v, want ErrInvalidParams", err)
	}
	q.SizeSectors = 8 * 2048 // past the end once the offset is counted
	if _, err := Open(q); !errors.Is(err, ErrInvalidParams) {
		t.Fatalf("oversized mapping: %v, want ErrInvalidParams", err)
	}
}
