package luks2

import (
	"context"
	"errors"
	"testing"

	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

const testDevSize = 32 << 20

func pass(t testing.TB, s string) *secret.Key {
	t.Helper()
	k, err := secret.FromBytes([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

// formatted returns a device formatted with one platform keyslot (slot 0)
// opened by passphrase "platform", and the volume key.
func formatted(t testing.TB, opts FormatOptions) (*memDevice, *Header, *secret.Key) {
	t.Helper()
	dev := newMemDevice(testDevSize)
	h, vk, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vk.Wipe)
	u, err := h.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddKeyslot(vk, pass(t, "platform"), KeyslotOptions{Slot: 0, KDF: kdf.Platform()}); err != nil {
		t.Fatal(err)
	}
	h, err = u.Commit(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	return dev, h, vk
}

func TestFormatThenReadAndOpen(t *testing.T) {
	dev, _, vk := formatted(t, FormatOptions{Label: "data1", Flags: []string{FlagNoWriteWorkqueue, FlagAllowDiscards}})
	h, err := Read(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	if h.Label != "data1" || h.NeedsRepair() || h.SeqID != 1 {
		t.Fatalf("header: label %q repair %v seq %d", h.Label, h.NeedsRepair(), h.SeqID)
	}
	got, slot, err := h.Open(dev, pass(t, "platform"))
	if err != nil {
		t.Fatal(err)
	}
	defer got.Wipe()
	if slot != 0 || !got.Equal(vk) {
		t.Fatalf("opened slot %d, key equal %v", slot, got.Equal(vk))
	}
	if _, _, err := h.Open(dev, pass(t, "wrong")); !errors.Is(err, ErrKeyRejected) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	a, err := h.Activation()
	if err != nil {
		t.Fatal(err)
	}
	if a.Cipher != "aes-xts-plain64" || a.KeySize != 64 || a.Offset != 16<<20 || !a.Dynamic || a.SectorSize != 4096 {
		t.Fatalf("activation %+v", a)
	}
	if len(a.Flags) != 2 || a.Flags[0] != FlagAllowDiscards || a.Flags[1] != FlagNoWriteWorkqueue {
		t.Fatalf("flags %v", a.Flags)
	}
}

func TestActivationLength(t *testing.T) {
	_, h, _ := formatted(t, FormatOptions{UUID: "0B5D0F3A-1111-4222-8333-444455556666", SectorSize: 4096})
	a, err := h.Activation()
	if err != nil {
		t.Fatal(err)
	}
	if a.UUID != "0b5d0f3a-1111-4222-8333-444455556666" {
		t.Fatalf("UUID %s not in libuuid's lower-case spelling", a.UUID)
	}
	if d := a.KeyringDescription(); d != "cryptsetup:0b5d0f3a-1111-4222-8333-444455556666-d0" {
		t.Fatalf("keyring description %s", d)
	}
	if n, err := a.Length(1<<30 + 1000); err != nil || n != 1<<30-16<<20 {
		t.Fatalf("length on 1 GiB + 1000 bytes: %d, %v", n, err)
	}
	if _, err := a.Length(16 << 20); !errors.Is(err, ErrDeviceTooSmall) {
		t.Fatalf("length on a device ending at the data offset: %v", err)
	}
	if _, _, err := New(FormatOptions{UUID: "not-a-uuid"}); err == nil {
		t.Fatal("malformed UUID accepted")
	}
	if _, _, err := New(FormatOptions{SectorSize: 8192}); err == nil {
		t.Fatal("8192-byte sectors accepted")
	}
}

// TestDataSegmentMissing: a device cut to exactly its header (or into its
// data) still has a readable header, but not a healthy volume: nothing can
// be mapped from it, and the header says so.
func TestDataSegmentMissing(t *testing.T) {
	dev, h, _ := formatted(t, FormatOptions{SectorSize: 4096})
	if h.Data.Err != nil || h.Data.Length != testDevSize-DefaultDataOffset {
		t.Fatalf("format: data %+v", h.Data)
	}
	for _, c := range []struct {
		size   int64
		length uint64
		ok     bool
	}{
		{testDevSize, testDevSize - DefaultDataOffset, true},
		{DefaultDataOffset + 4096, 4096, true},
		{DefaultDataOffset + 4095, 0, false},
		{DefaultDataOffset, 0, false},
	} {
		d := dev.snapshot()
		d.size = c.size
		h, err := Read(context.Background(), d)
		if err != nil {
			t.Fatalf("%d bytes: the header must stay readable: %v", c.size, err)
		}
		if (h.Data.Err == nil) != c.ok || h.Data.Length != c.length || (!c.ok && !errors.Is(h.Data.Err, ErrDeviceTooSmall)) {
			t.Errorf("%d bytes: data %+v, want length %d ok %v", c.size, h.Data, c.length, c.ok)
		}
	}
}
