package luks2

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/atrest/atrest/pkg/luks2/kdf"
)

func TestTokenRules(t *testing.T) {
	dev, _, _ := formatted(t, FormatOptions{})
	_, u := mustUpdate(t, dev)
	for _, c := range []struct{ name, json string }{
		{"builtin prefix", `{"type":"luks2-keyring","keyslots":["0"]}`},
		{"keyslots not strings", `{"type":"x","keyslots":[0]}`},
		{"keyslots missing", `{"type":"x"}`},
		{"empty type", `{"type":"","keyslots":[]}`},
		{"missing keyslot", `{"type":"x","keyslots":["3"]}`},
		{"not an object", `["type"]`},
		{"not JSON", `{"type":`},
	} {
		if _, err := u.SetToken(AnyToken, []byte(c.json)); err == nil {
			t.Errorf("%s: token %s accepted", c.name, c.json)
		}
	}
	big := `{"type":"atrest","keyslots":["0"],"blob":"` + strings.Repeat("A", 13000) + `"}`
	if _, err := u.SetToken(AnyToken, []byte(big)); !errors.Is(err, ErrNoSpace) {
		t.Errorf("token larger than the JSON area: %v, want ErrNoSpace", err)
	}
	// Unknown fields are kept in order and value, nested objects included.
	tok := `{"type":"atrest","keyslots":["0"],"z":{"b":[1,2.50,"x"],"a":null},"a":true}`
	id, err := u.SetToken(AnyToken, []byte(tok))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(context.Background(), dev); err != nil {
		t.Fatal(err)
	}
	h := read(t, dev)
	if got := string(h.Tokens[id].JSON()); got != tok {
		t.Fatalf("token after a round trip:\n%s\nwant\n%s", got, tok)
	}
	if got := string(h.Tokens[id].Field("z")); got != `{"b":[1,2.50,"x"],"a":null}` {
		t.Fatalf("field z: %s", got)
	}
	// Killing the keyslot unbinds the token but keeps it, as cryptsetup does.
	_, u = mustUpdate(t, dev)
	if err := u.KillKeyslot(0); err != nil {
		t.Fatal(err)
	}
	if got := u.Header().Tokens[id].Keyslots; len(got) != 0 {
		t.Fatalf("token still bound to %v", got)
	}
}

func read(t *testing.T, dev Reader) *Header {
	t.Helper()
	h, err := Read(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestConcurrentUpdateRefused(t *testing.T) {
	dev, _, vk := formatted(t, FormatOptions{})
	_, first := mustUpdate(t, dev)
	_, second := mustUpdate(t, dev)
	if _, err := first.AddKeyslot(vk, pass(t, "a"), KeyslotOptions{Slot: AnySlot, KDF: kdf.Platform()}); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Commit(context.Background(), dev); err != nil {
		t.Fatal(err)
	}
	if _, err := second.SetToken(AnyToken, []byte(`{"type":"x","keyslots":[]}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Commit(context.Background(), dev); !errors.Is(err, ErrConcurrentUpdate) {
		t.Fatalf("second commit from a stale header: %v, want ErrConcurrentUpdate", err)
	}
	if h := read(t, dev); len(h.Keyslots) != 2 || len(h.Tokens) != 0 {
		t.Fatalf("after the refused commit: %d keyslots, %d tokens", len(h.Keyslots), len(h.Tokens))
	}
}

func TestPrioritiesAndKDFs(t *testing.T) {
	dev, _, vk := formatted(t, FormatOptions{})
	_, u := mustUpdate(t, dev)
	argon, err := u.AddKeyslot(vk, pass(t, "shared"), KeyslotOptions{Slot: 5, KDF: kdf.Params{Type: kdf.Argon2i, Time: 3, Memory: 64, CPUs: 2}, Priority: PriorityPrefer})
	if err != nil {
		t.Fatal(err)
	}
	ignored, err := u.AddKeyslot(vk, pass(t, "shared"), KeyslotOptions{Slot: AnySlot, KDF: kdf.Params{Type: kdf.PBKDF2, Hash: "sha1", Iterations: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.SetKeyslotPriority(ignored, PriorityIgnore); err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddKeyslot(pass(t, strings.Repeat("k", 64)), pass(t, "x"), KeyslotOptions{Slot: AnySlot, KDF: kdf.Platform()}); !errors.Is(err, ErrWrongVolumeKey) {
		t.Fatalf("keyslot for a foreign volume key: %v", err)
	}
	if _, err := u.Commit(context.Background(), dev); err != nil {
		t.Fatal(err)
	}
	h := read(t, dev)
	got, slot, err := h.Open(dev, pass(t, "shared"))
	if err != nil || slot != argon || !got.Equal(vk) {
		t.Fatalf("open with the shared passphrase: slot %d, %v; want the preferred slot %d", slot, err, argon)
	}
	got.Wipe()
	if got, err := h.OpenKeyslot(dev, ignored, pass(t, "shared")); err != nil || !got.Equal(vk) {
		t.Fatalf("an ignored keyslot opens when named: %v", err)
	}
	infos := h.ListKeyslots()
	if len(infos) != 3 || infos[2].KDF != "argon2i t=3 m=64 p=2" || infos[2].Priority != PriorityPrefer || infos[1].Priority != PriorityIgnore {
		t.Fatalf("list: %+v", infos)
	}
}

func TestReadErrors(t *testing.T) {
	if _, err := Read(context.Background(), newMemDevice(testDevSize)); !errors.Is(err, ErrNotLUKS) {
		t.Errorf("blank device: %v, want ErrNotLUKS", err)
	}
	raw, err := os.ReadFile("testdata/cryptsetup-luks1.hdr.gz")
	if err != nil {
		t.Fatal(err)
	}
	zr, _ := gzip.NewReader(bytes.NewReader(raw))
	luks1, _ := io.ReadAll(zr)
	dev := newMemDevice(testDevSize)
	dev.WriteAt(luks1, 0)
	if _, err := Read(context.Background(), dev); !errors.Is(err, ErrLUKS1) {
		t.Errorf("LUKS1 device: %v, want ErrLUKS1", err)
	}
	dev, _, _ = formatted(t, FormatOptions{})
	dev.flip(BinaryHeaderSize + 1)
	dev.flip(DefaultMetadataSize + BinaryHeaderSize + 1)
	_, err = Read(context.Background(), dev)
	var damaged *DamagedError
	if !errors.Is(err, ErrHeaderDamaged) || !errors.As(err, &damaged) || len(damaged.Copies) != 2 {
		t.Errorf("both copies damaged: %v, want a DamagedError", err)
	}
	// The primary's version field decides, whatever the secondary holds
	// (cryptsetup luksDump: "LUKS keyslot 0 is invalid" for 1,
	// "Unsupported LUKS version 3"; 0 is a damaged LUKS2 primary).
	for _, c := range []struct {
		version uint16
		want    error
	}{{0, nil}, {1, ErrLUKS1}, {3, ErrNotLUKS}, {0xffff, ErrNotLUKS}} {
		dev, _, _ := formatted(t, FormatOptions{})
		var v [2]byte
		binary.BigEndian.PutUint16(v[:], c.version)
		dev.WriteAt(v[:], 6)
		h, err := Read(context.Background(), dev)
		if !errors.Is(err, c.want) || (c.want == nil && h.Copies[0].Valid) {
			t.Errorf("primary version %d over a LUKS2 secondary: %v, want %v", c.version, err, c.want)
		}
	}
	small, _, _ := formatted(t, FormatOptions{})
	small.size = 1 << 20
	if _, err := Read(context.Background(), small); !errors.Is(err, ErrDeviceTooSmall) {
		t.Errorf("truncated device: %v, want ErrDeviceTooSmall", err)
	}
}

func TestEraseDestroysKeyMaterial(t *testing.T) {
	dev, h, _ := formatted(t, FormatOptions{})
	area := h.Keyslots[0].Area
	before := make([]byte, area.Size)
	dev.ReadAt(before, int64(area.Offset))
	if _, err := Erase(context.Background(), dev); err != nil {
		t.Fatal(err)
	}
	h = read(t, dev)
	if len(h.Keyslots) != 0 || len(h.Tokens) != 0 {
		t.Fatalf("after erase: %d keyslots, %d tokens", len(h.Keyslots), len(h.Tokens))
	}
	after := make([]byte, area.Size)
	dev.ReadAt(after, int64(area.Offset))
	same := 0
	for i := range after {
		if after[i] == before[i] {
			same++
		}
	}
	if same > len(after)/100 {
		t.Fatalf("%d of %d bytes of the old keyslot area survive the erase", same, len(after))
	}
	if _, _, err := h.Open(dev, pass(t, "platform")); !errors.Is(err, ErrKeyRejected) {
		t.Fatalf("open after erase: %v", err)
	}
}

// failingReads is a device whose reads below end fail as a failing disk's
// do (EIO); reads beyond it work.
type failingReads struct {
	*memDevice
	end int64
}

func (f failingReads) ReadAt(p []byte, off int64) (int, error) {
	if off < f.end {
		return 0, &fs.PathError{Op: "read", Path: "/dev/mapper/failing", Err: syscall.EIO}
	}
	return f.memDevice.ReadAt(p, off)
}

// A header the device will not read is not "no LUKS header": that would
// tell the user the disk is blank. The error says the header cannot be
// read and carries the device's own error, whether both copies fail or
// only the primary (the secondary alone is trusted only once the rest of
// the header area is known to hold no other signature, which cannot be
// read either).
func TestReadFailingDevice(t *testing.T) {
	dev, h, _ := formatted(t, FormatOptions{})
	for _, end := range []int64{1 << 20, int64(h.MetadataSize)} {
		_, err := Read(context.Background(), failingReads{dev, end})
		if !errors.Is(err, ErrHeaderUnreadable) || errors.Is(err, ErrNotLUKS) || !errors.Is(err, syscall.EIO) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("reads failing below byte %d: %q, want one line saying %v, wrapping EIO, not %v", end, err, ErrHeaderUnreadable, ErrNotLUKS)
		}
	}
	// A blank device that fails its reads is not blank either.
	if _, err := Read(context.Background(), failingReads{newMemDevice(testDevSize), 1 << 20}); !errors.Is(err, ErrHeaderUnreadable) {
		t.Fatalf("a failing blank device: %v, want %v", err, ErrHeaderUnreadable)
	}
}

// pendingSectors is a disk whose pages below end fail their reads until
// they are written, as a disk's pending sectors do until it remaps them.
type pendingSectors struct {
	*memDevice
	end     int64
	mu      sync.Mutex
	written map[int64]bool
}

func (p *pendingSectors) ReadAt(b []byte, off int64) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pg := off / memPage; pg*memPage < off+int64(len(b)) && pg*memPage < p.end; pg++ {
		if !p.written[pg] {
			return 0, &fs.PathError{Op: "read", Path: "/dev/sdz", Err: syscall.EIO}
		}
	}
	return p.memDevice.ReadAt(b, off)
}

func (p *pendingSectors) WriteAt(b []byte, off int64) (int, error) {
	p.mu.Lock()
	for pg := off / memPage; pg*memPage < off+int64(len(b)); pg++ {
		p.written[pg] = true
	}
	p.mu.Unlock()
	return p.memDevice.WriteAt(b, off)
}

// A header backup restores onto a disk whose header area fails its reads
// only with force (whether it holds a header is unknown), and then brings
// the volume back: writing is what makes such a disk remap the sectors.
func TestRestoreOntoUnreadableHeader(t *testing.T) {
	ctx := context.Background()
	backup, h, vk := formatted(t, FormatOptions{})
	disk := &pendingSectors{memDevice: newMemDevice(testDevSize), end: 1 << 20, written: map[int64]bool{}}
	if _, err := Restore(ctx, disk, backup, RestoreOptions{}); !errors.Is(err, ErrHeaderUnreadable) || !strings.Contains(err.Error(), "unless forced") {
		t.Fatalf("restore without force onto an unreadable header: %v, want a refusal naming %v and force", err, ErrHeaderUnreadable)
	}
	if len(disk.written) != 0 {
		t.Fatalf("a refused restore wrote %d pages", len(disk.written))
	}
	got, err := Restore(ctx, disk, backup, RestoreOptions{Force: true})
	if err != nil || got.UUID != h.UUID {
		t.Fatalf("forced restore onto an unreadable header: %v", err)
	}
	k, _, err := got.Open(disk, pass(t, "platform"))
	if err != nil || !k.Equal(vk) {
		t.Fatalf("the restored volume does not open with its passphrase: %v", err)
	}
	k.Wipe()
}
