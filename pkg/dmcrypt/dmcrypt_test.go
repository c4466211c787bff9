package dmcrypt

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/secret"
)

const testUUID = "31590465-12ef-47c7-80d9-37d1b5de07bf"

func TestAvailableSaysWhyInOneLine(t *testing.T) {
	err := available("/nonexistent/mapper/control")
	if !errors.Is(err, ErrNoDeviceMapper) {
		t.Fatalf("missing control node: got %v, want ErrNoDeviceMapper", err)
	}
	// A node that opens but does not answer the version ioctl.
	err = available("/dev/null")
	if !errors.Is(err, ErrNoDeviceMapper) {
		t.Fatalf("/dev/null as control node: got %v, want ErrNoDeviceMapper", err)
	}
	// On this kernel: either device-mapper works or the error says so.
	if err := Available(); err != nil {
		if !errors.Is(err, ErrNoDeviceMapper) && !strings.Contains(err.Error(), "permission") {
			t.Fatalf("Available: %v", err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("Available error spans lines: %q", err)
		}
	}
}

func TestDMUUIDMatchesCryptsetup(t *testing.T) {
	got, err := DMUUID(testUUID, "data1")
	if err != nil {
		t.Fatal(err)
	}
	if want := "CRYPT-LUKS2-3159046512ef47c780d937d1b5de07bf-data1"; got != want {
		t.Fatalf("DMUUID = %q, want %q", got, want)
	}
	long, err := DMUUID(testUUID, strings.Repeat("n", 127))
	if err != nil {
		t.Fatal(err)
	}
	if len(long) != 128 || !strings.HasPrefix(long, "CRYPT-LUKS2-3159") {
		t.Fatalf("long name: dm UUID %q (%d bytes), want cut to 128", long, len(long))
	}
	for _, bad := range []string{"", "3159046512ef47c780d937d1b5de07bf", "31590465-12ef-47c7-80d9-37d1b5de07bg", "31590465+12ef-47c7-80d9-37d1b5de07bf"} {
		if _, err := DMUUID(bad, "x"); !errors.Is(err, ErrInvalidParams) {
			t.Errorf("DMUUID(%q): got %v, want ErrInvalidParams", bad, err)
		}
	}
}

func key(t *testing.T, b []byte) *secret.Key {
	t.Helper()
	k, err := secret.FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

func randomKey(t *testing.T, n int) *secret.Key {
	t.Helper()
	k, err := secret.Random(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

func TestValidateRejectsBadParams(t *testing.T) {
	good := func() Params {
		return Params{Name: "data1", UUID: testUUID, Device: "/dev/loop0", Key: randomKey(t, 64), SectorSize: 4096}
	}
	if p := good(); p.validate() != nil {
		t.Fatalf("good params rejected: %v", p.validate())
	}
	wiped := randomKey(t, 64)
	wiped.Wipe()
	halves := make([]byte, 64)
	for i := range halves {
		halves[i] = byte(i % 32)
	}
	cases := []struct {
		name   string
		mutate func(*Params)
		want   error
	}{
		{"empty name", func(p *Params) { p.Name = "" }, ErrInvalidParams},
		{"slash in name", func(p *Params) { p.Name = "a/b" }, ErrInvalidParams},
		{"space in name", func(p *Params) { p.Name = "a b" }, ErrInvalidParams},
		{"control", func(p *Params) { p.Name = "control" }, ErrInvalidParams},
		{"long name", func(p *Params) { p.Name = strings.Repeat("x", 128) }, ErrInvalidParams},
		{"bad uuid", func(p *Params) { p.UUID = "nope" }, ErrInvalidParams},
		{"no device", func(p *Params) { p.Device = "" }, ErrInvalidParams},
		{"other cipher", func(p *Params) { p.Cipher = "aes-cbc-essiv:sha256" }, ErrInvalidParams},
		{"sector size", func(p *Params) { p.SectorSize = 8192 }, ErrInvalidParams},
		{"unknown flag", func(p *Params) { p.Flags = 1 << 7 }, ErrInvalidParams},
		{"nil key", func(p *Params) { p.Key = nil }, ErrKeyRejected},
		{"wiped key", func(p *Params) { p.Key = wiped }, ErrKeyRejected},
		{"16-byte key", func(p *Params) { p.Key = randomKey(t, 16) }, ErrKeyRejected},
		{"63-byte key", func(p *Params) { p.Key = randomKey(t, 63) }, ErrKeyRejected},
		{"all-zero key", func(p *Params) { p.Key = key(t, make([]byte, 64)) }, ErrKeyRejected},
		{"equal XTS halves", func(p *Params) { p.Key = key(t, halves) }, ErrKeyRejected},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := good()
			c.mutate(&p)
			if err := p.validate(); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	for _, n := range []int{32, 48, 64} {
		p := good()
		p.Key = randomKey(t, n)
		if err := p.validate(); err != nil {
			t.Errorf("%d-byte key rejected: %v", n, err)
		}
	}
}

func TestParseCryptTable(t *testing.T) {
	params := "aes-xts-plain64 :64:logon:atrest:CRYPT-LUKS2-3159046512ef47c780d937d1b5de07bf-data1 0 7:3 32768 4 allow_discards sector_size:4096 no_read_workqueue no_write_workqueue"
	tab, err := parseCrypt([]byte(params))
	if err != nil {
		t.Fatal(err)
	}
	want := Table{
		Cipher: "aes-xts-plain64", KeySize: 64,
		KeyDescription: "logon:atrest:CRYPT-LUKS2-3159046512ef47c780d937d1b5de07bf-data1",
		Device:         "7:3", OffsetSectors: 32768, SectorSize: 4096,
		Flags: AllowDiscards | NoReadWorkqueue | NoWriteWorkqueue,
	}
	if fmt.Sprint(*tab) != fmt.Sprint(want) {
		t.Fatalf("parsed\n%+v\nwant\n%+v", *tab, want)
	}

	// A table holding the key itself (made without the keyring) parses
	// without the key showing up anywhere in the result.
	hexKey := hex.EncodeToString([]byte("0123456789abcdef0123456789ABCDEF"))
	tab, err = parseCrypt([]byte("aes-xts-plain64 " + hexKey + " 0 8:16 4096 1 same_cpu_crypt"))
	if err != nil {
		t.Fatal(err)
	}
	if tab.KeySize != 32 || tab.KeyDescription != "" || tab.SectorSize != 512 || len(tab.Options) != 1 {
		t.Fatalf("inline-key table parsed as %+v", *tab)
	}
	if s := fmt.Sprintf("%+v %#v", *tab, *tab); strings.Contains(s, hexKey) {
		t.Fatalf("parsed table reveals the key: %s", s)
	}

	for _, bad := range []string{"", "aes-xts-plain64 :64:logon 0 7:3 0", "aes-xts-plain64 - x 7:3 0", "aes-xts-plain64 - 0 7:3 0 2 allow_discards"} {
		if _, err := parseCrypt([]byte(bad)); err == nil {
			t.Errorf("parseCrypt(%q) accepted", bad)
		}
	}
}

func TestFlagNames(t *testing.T) {
	f := AllowDiscards | NoWriteWorkqueue
	if got := f.String(); got != "allow_discards,no_write_workqueue" {
		t.Fatalf("String = %q", got)
	}
	if Flag(0).Names() != nil {
		t.Fatal("no flags should give no names")
	}
}

func TestBusyErrorSaysWhy(t *testing.T) {
	err := error(&BusyError{Name: "data1", OpenCount: 1, Mounts: []string{"/srv"}})
	if !errors.Is(err, ErrBusy) {
		t.Fatal("BusyError does not match ErrBusy")
	}
	if want := "dmcrypt: cannot close data1: it is in use (mounted on /srv); unmount or release it first"; err.Error() != want {
		t.Fatalf("got %q\nwant %q", err, want)
	}
}
