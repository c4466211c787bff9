package luks2

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/luks2/luks2test"
	"github.com/atrest/atrest/pkg/secret"
)

// sectorCrypt en- or decrypts a data area with vk as dm-crypt does
// (luks2test.DataXTS: golang.org/x/crypto/xts).
func sectorCrypt(t testing.TB, vk []byte, data []byte, sector int, encrypt bool) []byte {
	t.Helper()
	out, err := luks2test.DataXTS(vk, data, sector, encrypt)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// On a loop device, atrest starts a re-encryption of an atrest-formatted
// volume (platform and recovery secrets re-enrolled under the new key) and
// stops after one hotzone; cryptsetup reencrypt --resume-only finishes it;
// luksDump --dump-volume-key with the recovery key shows the new key,
// cryptsetup open --test-passphrase accepts it, and the plaintext read
// through userspace decryption is unchanged.
func TestCryptsetupFinishesAtrestReencryption(t *testing.T) {
	requireTier(t)
	for _, sector := range []int{512, 4096} {
		t.Run("sector-"+strconv.Itoa(sector), func(t *testing.T) {
			path := loopDevice(t, 48*mib)
			_, vk := formatAtrest(t, path, luks2.FormatOptions{SectorSize: uint32(sector)})
			dev := openDev(t, path)
			plain := make([]byte, 32*mib)
			rand.Read(plain)
			if _, err := dev.WriteAt(sectorCrypt(t, vk.Bytes(), plain, sector, true), luks2.DefaultDataOffset); err != nil {
				t.Fatal(err)
			}
			newVK, err := secret.Random(vk.Len())
			if err != nil {
				t.Fatal(err)
			}
			defer newVK.Wipe()
			u, err := read(t, dev).BeginReencrypt(vk, newVK)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{platformPass, recoveryPass} {
				if _, err := u.AddKeyslot(newVK, key(t, p), luks2.KeyslotOptions{Slot: luks2.AnySlot, KDF: kdf.Platform()}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := u.CommitReencrypt(ctx(t), dev); err != nil {
				t.Fatal(err)
			}
			h := read(t, dev)
			keys, err := h.OpenReencryptKeys(dev, key(t, platformPass))
			if err != nil {
				t.Fatal(err)
			}
			r, err := h.ResumeReencrypt(dev, keys.Old, keys.New)
			keys.Wipe()
			if err != nil {
				t.Fatal(err)
			}
			r.Hotzone = 4 * mib
			stop, cancel := context.WithCancel(ctx(t))
			r.Progress = func(done, total uint64) {
				if done > 0 {
					cancel()
				}
			}
			if _, err := r.Run(stop); !errors.Is(err, context.Canceled) {
				t.Fatalf("run: %v", err)
			}
			if dump := cryptsetup(t, "", "luksDump", path); !strings.Contains(dump, "online-reencrypt-v2") || !strings.Contains(dump, "backup-final") {
				t.Fatalf("luksDump:\n%s", dump)
			}
			cryptsetup(t, "", "reencrypt", "--resume-only", "--key-file", keyFile(t, platformPass), path)
			rec := keyFile(t, recoveryPass)
			if got := dumpVolumeKey(t, path, rec); !bytes.Equal(got, newVK.Bytes()) {
				t.Fatal("luksDump --dump-volume-key does not show the new key")
			}
			cryptsetup(t, "", "open", "--test-passphrase", "--key-file", rec, path)
			data := make([]byte, len(plain))
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.ReadAt(data, luks2.DefaultDataOffset); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sectorCrypt(t, newVK.Bytes(), data, sector, false), plain) {
				t.Fatal("plaintext changed")
			}
		})
	}
}
