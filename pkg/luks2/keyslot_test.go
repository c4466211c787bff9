package luks2

import (
	"context"
	"errors"
	"testing"

	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/luks2/luks2test"
)

// unboundImage returns a device with keyslot 0 ("platform") holding the
// volume key and keyslot 1 ("unbound") holding another key under its own
// digest, which covers no segment: what `cryptsetup luksAddKey --unbound`
// makes.
func unboundImage(t *testing.T) (*memDevice, []byte) {
	t.Helper()
	dev, _, vk := formatted(t, FormatOptions{})
	other, _, ovk := formatted(t, FormatOptions{})
	_, u := mustUpdate(t, other)
	if _, err := u.AddKeyslot(ovk, pass(t, "unbound"), KeyslotOptions{Slot: 1, KDF: kdf.Platform()}); err != nil {
		t.Fatal(err)
	}
	oh, err := u.Commit(context.Background(), other)
	if err != nil {
		t.Fatal(err)
	}
	a := oh.Keyslots[1].Area
	buf := make([]byte, a.Size)
	other.ReadAt(buf, int64(a.Offset))
	dev.WriteAt(buf, int64(a.Offset))
	odoc, err := luks2test.Metadata(other.bytesOf())
	if err != nil {
		t.Fatal(err)
	}
	img := dev.bytesOf()
	if err := luks2test.Rewrite(img, func(doc map[string]any) {
		luks2test.Obj(doc, "keyslots")["1"] = luks2test.Obj(odoc, "keyslots", "1")
		d := luks2test.Obj(odoc, "digests", "0")
		d["keyslots"], d["segments"] = []any{"1"}, []any{}
		luks2test.Obj(doc, "digests")["1"] = d
	}); err != nil {
		t.Fatal(err)
	}
	return memFromBytes(img), append([]byte(nil), vk.Bytes()...)
}

// TestUnboundKeyslotYieldsNoKey: a keyslot no digest of the data segment
// covers opens to a key that is not the volume key; cryptsetup answers "No
// key available with this passphrase", and so must every opener here.
func TestUnboundKeyslotYieldsNoKey(t *testing.T) {
	dev, want := unboundImage(t)
	h, err := Read(context.Background(), dev)
	if err != nil {
		t.Fatalf("cryptsetup reads headers with unbound keyslots: %v", err)
	}
	vk, err := h.OpenKeyslot(dev, 1, pass(t, "unbound"))
	if err == nil {
		vk.Wipe()
		t.Fatal("OpenKeyslot returned a key from an unbound keyslot")
	}
	if !errors.Is(err, ErrUnboundKeyslot) || !errors.Is(err, ErrKeyRejected) {
		t.Fatalf("error %v wraps neither ErrUnboundKeyslot nor ErrKeyRejected", err)
	}
	if vk, slot, err := h.Open(dev, pass(t, "unbound")); !errors.Is(err, ErrKeyRejected) {
		if err == nil {
			vk.Wipe()
		}
		t.Fatalf("Open with the unbound keyslot's passphrase: slot %d, %v", slot, err)
	}
	vk, slot, err := h.Open(dev, pass(t, "platform"))
	if err != nil || slot != 0 {
		t.Fatalf("platform passphrase: slot %d, %v", slot, err)
	}
	defer vk.Wipe()
	if string(vk.Bytes()) != string(want) {
		t.Fatal("keyslot 0 gave another key")
	}
}

// TestOpenKeyslotAllocations: an open allocates a bounded number of small
// objects whatever the area size (1,548 before the area cipher stopped
// allocating per sector), and leaves no key material in the locked buffer
// it returns to the pool for the next open.
func TestOpenKeyslotAllocations(t *testing.T) {
	dev, h, vk := formatted(t, FormatOptions{})
	p := pass(t, "platform")
	allocs := testing.AllocsPerRun(20, func() {
		got, err := h.OpenKeyslot(dev, 0, p)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(vk) {
			t.Fatal("keyslot opens to another key")
		}
		got.Wipe()
	})
	if allocs > 64 {
		t.Fatalf("a keyslot open makes %.0f allocations (want at most 64)", allocs)
	}
	w, err := getWork(workSize(64, 64))
	if err != nil {
		t.Fatal(err)
	}
	defer putWork(w)
	for _, b := range w.Bytes() {
		if b != 0 {
			t.Fatal("the pooled work buffer still holds an open's intermediates")
		}
	}
}
