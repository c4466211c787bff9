package unlock

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/atrest/atrest/integration/vm/guest"
	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/blockdev/preflight"
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

const passphrase = "correct horse battery staple"

func passKey(t *testing.T) *secret.Key {
	t.Helper()
	k, err := secret.FromBytes([]byte(passphrase))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

// mapLUKS2 reads dev's header afresh, opens a keyslot with the passphrase
// and maps the data segment with pkg/dmcrypt: the unlock path of atrest,
// LUKS2 engine and device-mapper together.
func mapLUKS2(t *testing.T, dev, name string) *dmcrypt.Mapping {
	t.Helper()
	f, err := luks2.OpenFile(dev, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := luks2.Read(context.Background(), f)
	if err != nil {
		t.Fatalf("read header: %v", err)
	}
	vk, _, err := h.Open(f, passKey(t))
	if err != nil {
		t.Fatalf("open keyslot: %v", err)
	}
	defer vk.Wipe()
	a, err := h.Activation()
	if err != nil {
		t.Fatal(err)
	}
	m, err := dmcrypt.Open(dmcrypt.Params{
		Name: name, UUID: a.UUID, Device: dev, OffsetSectors: a.Offset / 512, SizeSectors: a.Size / 512,
		Cipher: a.Cipher, Key: vk, SectorSize: a.SectorSize,
	})
	if err != nil {
		t.Fatalf("dmcrypt.Open: %v", err)
	}
	t.Cleanup(func() { _ = dmcrypt.Close(context.Background(), name) })
	return m
}

// A volume formatted by pkg/luks2 opens through pkg/dmcrypt, keeps 32 MiB
// across close and reopen, and cryptsetup reads the same plaintext.
func TestAtrestFormattedVolumeRoundTrip(t *testing.T) {
	testutil.RequireDeviceMapper(t)
	testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	d := guest.Disk(t, 64)
	keyFile := guest.KeyFile(t, []byte(passphrase))

	f, err := luks2.OpenFile(d.Path, true)
	if err != nil {
		t.Fatal(err)
	}
	h, vk, err := luks2.New(luks2.FormatOptions{Label: "vm-roundtrip"})
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	u, err := h.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddKeyslot(vk, passKey(t), luks2.KeyslotOptions{Slot: luks2.AnySlot, KDF: kdf.Platform()}); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(context.Background(), f); err != nil {
		t.Fatalf("format: %v", err)
	}
	f.Close()

	const size = 32 << 20
	data := pattern(7, size)
	m := mapLUKS2(t, d.Path, "atrest-fmt")
	write(t, m.Path, data)
	closeT(t, m.Name)

	m = mapLUKS2(t, d.Path, "atrest-fmt")
	if !bytes.Equal(read(t, m.Path, size), data) {
		t.Fatal("data written through pkg/dmcrypt changed across close and reopen")
	}
	closeT(t, m.Name)

	guest.Run(t, "cryptsetup", "open", "--readonly", "--key-file", keyFile, d.Path, "cs-fmt")
	defer guest.Try("cryptsetup", "close", "cs-fmt")
	if !bytes.Equal(read(t, "/dev/mapper/cs-fmt", size), data) {
		t.Fatal("cryptsetup reads other plaintext from an atrest-formatted volume")
	}
}

// atrest opens a volume cryptsetup made and reads what cryptsetup wrote.
func TestAtrestOpensCryptsetupVolume(t *testing.T) {
	v := newVolume(t, 64)
	const size = 16 << 20
	data := pattern(8, size)
	guest.Run(t, "cryptsetup", "open", "--key-file", v.keyFile, v.dev, "cs-made")
	write(t, "/dev/mapper/cs-made", data)
	guest.Run(t, "cryptsetup", "close", "cs-made")

	m := mapLUKS2(t, v.dev, "atrest-reads-cs")
	if !bytes.Equal(read(t, m.Path, size), data) {
		t.Fatal("atrest reads other bytes than cryptsetup wrote")
	}
}

// A loop device under a dm-crypt mapping is held: the format preflight
// names the holder and refuses, and the device is left as it was.
func TestPreflightRefusesDeviceHeldByMapping(t *testing.T) {
	v := newVolume(t, 32)
	m := v.open(t, "atrest-holder", 0)
	before := sum(t, v.dev)

	d, err := blockdev.Inspect(v.dev)
	if err != nil {
		t.Fatal(err)
	}
	err = d.CheckUnused()
	if !errors.Is(err, blockdev.ErrHeld) || !errors.Is(err, blockdev.ErrInUse) {
		t.Fatalf("CheckUnused of a device under a mapping: %v, want ErrHeld", err)
	}
	st, _ := dmcrypt.Inspect(m.Name)
	if !strings.Contains(err.Error(), "dm-") || !strings.Contains(err.Error(), m.Name) {
		t.Fatalf("the refusal does not name the holder (%s, dev %d:%d): %v", m.Name, st.Major, st.Minor, err)
	}
	for _, force := range []bool{false, true} {
		if _, err := preflight.Run(context.Background(), v.dev, preflight.Options{Force: force}); !errors.Is(err, blockdev.ErrInUse) {
			t.Fatalf("preflight (force %v) of a held device: %v, want ErrInUse", force, err)
		}
	}
	if after := sum(t, v.dev); after != before {
		t.Fatal("the refused preflight changed the device")
	}
}

func sum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}
