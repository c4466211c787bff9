package luks2

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

// TestSealedKeyslotsOpenWhereverTheyGo seals keyslots before the Update
// that adds them exists, on goroutines of their own, as format does while
// the KMS answers: added behind a keyslot added the ordinary way, at other
// areas than they would have had, each opens with its passphrase, through
// atrest and through cryptsetup, to the volume key.
func TestSealedKeyslotsOpenWhereverTheyGo(t *testing.T) {
	h, vk, err := New(FormatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vk.Wipe)
	words := []string{"sealed-ahead-one", "sealed-ahead-two"}
	sealed := make([]*SealedKeyslot, len(words))
	errs := make([]error, len(words))
	var wg sync.WaitGroup
	for i, w := range words {
		p := pass(t, w)
		wg.Go(func() { sealed[i], errs[i] = SealKeyslot(vk, p, kdf.Platform()) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	u, err := h.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddKeyslot(vk, pass(t, "ordinary"), KeyslotOptions{Slot: 0, KDF: kdf.Platform()}); err != nil {
		t.Fatal(err)
	}
	slots := []int{5, AnySlot}
	for i, s := range sealed {
		if slots[i], err = u.AddSealed(vk, s, KeyslotOptions{Slot: slots[i]}); err != nil {
			t.Fatal(err)
		}
	}
	if slots[0] != 5 || slots[1] != 1 {
		t.Fatalf("sealed keyslots went to %v, want [5 1]", slots)
	}
	dev := newMemDevice(testDevSize)
	h, err = u.Commit(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	if h.Keyslots[5].Area.Offset == h.Keyslots[1].Area.Offset || h.Keyslots[1].Area.Offset == h.Keyslots[0].Area.Offset {
		t.Fatalf("keyslot areas overlap: %d, %d, %d", h.Keyslots[0].Area.Offset, h.Keyslots[1].Area.Offset, h.Keyslots[5].Area.Offset)
	}
	for i, w := range words {
		got, err := h.OpenKeyslot(dev, slots[i], pass(t, w))
		if err != nil {
			t.Fatalf("sealed keyslot %d: %v", slots[i], err)
		}
		if !got.Equal(vk) {
			t.Fatalf("sealed keyslot %d opens to another key", slots[i])
		}
		got.Wipe()
	}
	testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, dev.bytesOf(), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, w := range words {
		kf := filepath.Join(dir, "key")
		if err := os.WriteFile(kf, []byte(w), 0o600); err != nil {
			t.Fatal(err)
		}
		runTool(t, "cryptsetup", "open", "--test-passphrase", "--key-slot", itoa(slots[i]), "--key-file", kf, img)
	}
}

// TestSealedKeyslotRefusals: a keyslot sealed for a key of another size,
// or added where no keyslot is free, is refused and leaves the Update as
// it was; an empty passphrase is refused before any sealing.
func TestSealedKeyslotRefusals(t *testing.T) {
	_, h, vk := formatted(t, FormatOptions{})
	if _, err := SealKeyslot(vk, &secret.Key{}, kdf.Platform()); err == nil {
		t.Fatal("an empty passphrase was sealed")
	}
	short, err := secret.Random(32)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(short.Wipe)
	other, err := SealKeyslot(short, pass(t, "x"), kdf.Platform())
	if err != nil {
		t.Fatal(err)
	}
	u, err := h.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddSealed(vk, other, KeyslotOptions{Slot: AnySlot}); err == nil {
		t.Fatal("a keyslot sealed for a 32-byte key was added for a 64-byte volume key")
	}
	s, err := SealKeyslot(vk, pass(t, "y"), kdf.Platform())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddSealed(vk, s, KeyslotOptions{Slot: 0}); !errors.Is(err, ErrSlotInUse) {
		t.Fatalf("added over keyslot 0: %v, want ErrSlotInUse", err)
	}
	if len(u.Header().Keyslots) != 1 {
		t.Fatalf("the refusals left %d keyslots, want 1", len(u.Header().Keyslots))
	}
}
