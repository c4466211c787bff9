package luks2

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/xts"

	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

// TestXTSMatchesReference checks the sector cipher against
// golang.org/x/crypto/xts for every AES key size and both LUKS2 sector
// sizes, on random data at random sector numbers (low ones, ones past
// 2^32 and near 2^64), both ways, through the fast path and the portable
// one.
func TestXTSMatchesReference(t *testing.T) {
	r := mrand.New(mrand.NewPCG(1, 2))
	for _, keyLen := range []int{32, 48, 64} {
		for _, sectorSize := range []int{512, 4096} {
			for _, path := range []string{"fast", "portable"} {
				t.Run(fmt.Sprintf("%d-byte key/%d-byte sectors/%s", keyLen, sectorSize, path), func(t *testing.T) {
					k, err := secret.Random(keyLen)
					if err != nil {
						t.Fatal(err)
					}
					defer k.Wipe()
					ref, err := xts.NewCipher(aes.NewCipher, k.Bytes())
					if err != nil {
						t.Fatal(err)
					}
					var sched []byte
					if path == "fast" {
						if !haveAESNI {
							t.Skip("no AES-NI: the portable path is the only one")
						}
						sched = make([]byte, xtsScheduleSize)
					}
					x, err := newXTS(k.Bytes(), sched)
					if err != nil {
						t.Fatal(err)
					}
					for _, first := range []uint64{0, r.Uint64N(1 << 32), 1<<32 - 3, r.Uint64(), ^uint64(0) - 7} {
						n := 1 + r.IntN(9)
						plain := make([]byte, n*sectorSize)
						rand.Read(plain)
						want := make([]byte, len(plain))
						for s := range n {
							ref.Encrypt(want[s*sectorSize:(s+1)*sectorSize], plain[s*sectorSize:(s+1)*sectorSize], first+uint64(s))
						}
						got := bytes.Clone(plain)
						x.cryptSectors(got, sectorSize, first, true)
						if !bytes.Equal(got, want) {
							t.Fatalf("sectors from %d: encryption differs from x/crypto/xts", first)
						}
						x.cryptSectors(got, sectorSize, first, false)
						if !bytes.Equal(got, plain) {
							t.Fatalf("sectors from %d: decryption differs from x/crypto/xts", first)
						}
					}
				})
			}
		}
	}
}

// TestXTSReadsCryptsetupAreas opens keyslots cryptsetup wrote, with every
// keyslot key size atrest writes (cryptsetup here cannot check a 384-bit
// XTS key without device-mapper; x/crypto/xts covers it above), and checks that
// the volume key is the one cryptsetup was given: the area decryption is
// byte-identical to cryptsetup's (the AF merge and the digest would reject
// anything else). It also checks that cryptsetup opens an area atrest
// encrypted with the same key size.
func TestXTSReadsCryptsetupAreas(t *testing.T) {
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		t.Skip("cryptsetup not installed")
	}
	for _, bits := range []int{256, 512} {
		t.Run(fmt.Sprint(bits), func(t *testing.T) {
			dir := t.TempDir()
			img := imageFile(t, dir, 20<<20)
			vkBytes := make([]byte, bits/8)
			rand.Read(vkBytes)
			vkFile := filepath.Join(dir, "vk")
			keyFile := filepath.Join(dir, "key")
			os.WriteFile(vkFile, vkBytes, 0o600)
			os.WriteFile(keyFile, []byte("cryptsetup wrote this"), 0o600)
			runTool(t, "cryptsetup", "luksFormat", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
				"--cipher", "aes-xts-plain64", "--key-size", fmt.Sprint(bits), "--volume-key-file", vkFile, "--key-file", keyFile, img)
			f, err := OpenFile(img, true)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			h, err := Read(context.Background(), f)
			if err != nil {
				t.Fatal(err)
			}
			vk, err := h.OpenKeyslot(f, 0, pass(t, "cryptsetup wrote this"))
			if err != nil {
				t.Fatalf("keyslot cryptsetup wrote: %v", err)
			}
			defer vk.Wipe()
			if !bytes.Equal(vk.Bytes(), vkBytes) {
				t.Fatal("keyslot cryptsetup wrote opens to another volume key")
			}
			u, err := h.Begin()
			if err != nil {
				t.Fatal(err)
			}
			id, err := u.AddKeyslot(vk, pass(t, "atrest wrote this"), KeyslotOptions{Slot: AnySlot, KDF: kdf.Platform()})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := u.Commit(context.Background(), f); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(keyFile, []byte("atrest wrote this"), 0o600)
			runTool(t, "cryptsetup", "open", "--test-passphrase", "--key-slot", fmt.Sprint(id), "--key-file", keyFile, img)
		})
	}
}

// BenchmarkAreaDecrypt decrypts a 64-byte key's keyslot area (500
// sectors of 512 bytes) with this package's XTS and with
// golang.org/x/crypto/xts, each keyed once.
func BenchmarkAreaDecrypt(b *testing.B) {
	k, err := secret.Random(64)
	if err != nil {
		b.Fatal(err)
	}
	defer k.Wipe()
	buf := make([]byte, 256000)
	b.Run("luks2", func(b *testing.B) {
		x, err := newXTS(k.Bytes(), make([]byte, xtsScheduleSize))
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(buf)))
		for range b.N {
			x.cryptSectors(buf, areaSectorSize, 0, false)
		}
	})
	b.Run("x-crypto-xts", func(b *testing.B) {
		c, err := xts.NewCipher(aes.NewCipher, k.Bytes())
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(buf)))
		for range b.N {
			for i := 0; i < len(buf); i += areaSectorSize {
				c.Decrypt(buf[i:i+areaSectorSize], buf[i:i+areaSectorSize], uint64(i/areaSectorSize))
			}
		}
	})
}

// BenchmarkXTS4096 decrypts 1 MiB in 4096-byte sectors, the data path's
// unit, keyed once.
func BenchmarkXTS4096(b *testing.B) {
	k, err := secret.Random(64)
	if err != nil {
		b.Fatal(err)
	}
	defer k.Wipe()
	x, err := newXTS(k.Bytes(), make([]byte, xtsScheduleSize))
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for i := range b.N {
		x.cryptSectors(buf, 4096, binary.LittleEndian.Uint64(buf[:8])+uint64(i), false)
	}
}
