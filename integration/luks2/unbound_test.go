package luks2

import (
	"errors"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/luks2"
)

// TestUnboundKeyslotOpensNothing: a keyslot cryptsetup adds with
// --unbound holds a key of its own, under a digest that covers no segment.
// cryptsetup opens no volume with its passphrase, and atrest yields no
// volume key from it (which `recovery unlock` would map).
func TestUnboundKeyslotOpensNothing(t *testing.T) {
	requireTier(t)
	path := loopDevice(t, 20*mib)
	k0, k1 := keyFile(t, "bound"), keyFile(t, "unbound")
	cryptsetup(t, "", "luksFormat", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", k0, path)
	cryptsetup(t, "", "luksAddKey", "--unbound", "--key-size", "512", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", k0, path, k1)
	if _, errOut, err := runCryptsetup("", "open", "--test-passphrase", "--key-file", k1, path); err == nil || !strings.Contains(errOut, "No usable keyslot") {
		t.Fatalf("cryptsetup opened with the unbound keyslot's passphrase: %v %s", err, errOut)
	}
	dev := openDev(t, path)
	h := read(t, dev)
	if vk, slot, err := h.Open(dev, key(t, "unbound")); !errors.Is(err, luks2.ErrKeyRejected) {
		if err == nil {
			vk.Wipe()
		}
		t.Fatalf("Open: slot %d, %v", slot, err)
	}
	if vk, err := h.OpenKeyslot(dev, 1, key(t, "unbound")); !errors.Is(err, luks2.ErrUnboundKeyslot) {
		if err == nil {
			vk.Wipe()
		}
		t.Fatalf("OpenKeyslot(1): %v, want ErrUnboundKeyslot", err)
	}
	vk, slot, err := h.Open(dev, key(t, "bound"))
	if err != nil || slot != 0 {
		t.Fatalf("Open with the bound passphrase: slot %d, %v", slot, err)
	}
	defer vk.Wipe()
	if want := dumpVolumeKey(t, path, k0); string(vk.Bytes()) != string(want) {
		t.Fatal("keyslot 0 gave another key than cryptsetup's volume key")
	}
}
