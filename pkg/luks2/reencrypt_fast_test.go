package luks2

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/rand"
	"runtime"
	"testing"

	"golang.org/x/crypto/xts"

	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/luks2/luks2test"
	"github.com/atrest/atrest/pkg/secret"
)

// fastDataSize is large enough that the checksums and the re-encryption of
// a hotzone are spread over the cores and the next hotzone is read ahead.
const fastDataSize = 12 << 20

// The offline data path at its full width — hotzones of 4 MiB split over
// the cores, the next one read ahead — leaves every sector as
// golang.org/x/crypto/xts encrypts the plaintext under the new key (and
// read it under the old), for both LUKS2 sector sizes.
func TestReencryptParallelMatchesXTS(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	}
	for _, sector := range []uint32{512, 4096} {
		t.Run(itoa(int(sector)), func(t *testing.T) {
			dev := newMemDevice(DefaultDataOffset + fastDataSize)
			h, oldVK, err := New(FormatOptions{SectorSize: sector})
			if err != nil {
				t.Fatal(err)
			}
			defer oldVK.Wipe()
			u, _ := h.Begin()
			if _, err := u.AddKeyslot(oldVK, pass(t, "platform"), KeyslotOptions{Slot: 0, KDF: kdf.Platform()}); err != nil {
				t.Fatal(err)
			}
			if _, err := u.SetToken(0, []byte(reencToken)); err != nil {
				t.Fatal(err)
			}
			if _, err := u.Commit(context.Background(), dev); err != nil {
				t.Fatal(err)
			}
			plain := make([]byte, fastDataSize)
			rand.Read(plain)
			if _, err := dev.WriteAt(refXTS(t, oldVK, plain, int(sector), true), DefaultDataOffset); err != nil {
				t.Fatal(err)
			}
			newVK, err := startReencrypt(t, dev, oldVK)
			if err != nil {
				t.Fatal(err)
			}
			var steps int
			h = read(t, dev)
			r, err := h.ResumeReencrypt(dev, oldVK, newVK)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			r.Hotzone, r.ReadAhead = 4<<20, true
			r.Progress = func(done, total uint64) { steps++ }
			if _, err := r.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if steps != 1+3 {
				t.Fatalf("%d progress reports, want the start and 3 hotzones", steps)
			}
			got := make([]byte, fastDataSize)
			if _, err := dev.ReadAt(got, DefaultDataOffset); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, refXTS(t, newVK, plain, int(sector), true)) {
				t.Fatal("the re-encrypted data differs from x/crypto/xts under the new key")
			}
		})
	}
}

// refXTS en- or decrypts data with x/crypto/xts as dm-crypt does.
func refXTS(t testing.TB, vk *secret.Key, data []byte, sector int, encrypt bool) []byte {
	t.Helper()
	out, err := luks2test.DataXTS(vk.Bytes(), data, sector, encrypt)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// BenchmarkRecrypt is the crypto of the offline data path: one 64 MiB
// hotzone decrypted with the old key and encrypted with the new (4096-byte
// sectors), on one core and spread over all; MB/s counts data bytes (each
// passes AES-XTS twice). x-crypto-xts is the same work with
// golang.org/x/crypto/xts on one core.
func BenchmarkRecrypt(b *testing.B) {
	buf := make([]byte, DefaultHotzone)
	keys := [2]*secret.Key{}
	for i := range keys {
		k, err := secret.Random(64)
		if err != nil {
			b.Fatal(err)
		}
		defer k.Wipe()
		keys[i] = k
	}
	r := &Reencryptor{sector: 4096, st: &ReencryptState{BlockSize: 4096}}
	var err error
	if r.oldX, err = newXTS(keys[0].Bytes(), make([]byte, xtsScheduleSize)); err != nil {
		b.Fatal(err)
	}
	if r.newX, err = newXTS(keys[1].Bytes(), make([]byte, xtsScheduleSize)); err != nil {
		b.Fatal(err)
	}
	for _, procs := range []int{1, runtime.NumCPU()} {
		b.Run("luks2-cores-"+itoa(procs), func(b *testing.B) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			b.SetBytes(int64(len(buf)))
			for range b.N {
				r.recrypt(buf, 0)
			}
		})
	}
	b.Run("checksums-cores-"+itoa(runtime.NumCPU()), func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		for range b.N {
			r.checksums(buf)
		}
	})
	b.Run("x-crypto-xts-cores-1", func(b *testing.B) {
		oldC, _ := xts.NewCipher(aes.NewCipher, keys[0].Bytes())
		newC, _ := xts.NewCipher(aes.NewCipher, keys[1].Bytes())
		b.SetBytes(int64(len(buf)))
		for range b.N {
			for s := 0; s < len(buf); s += 4096 {
				sec := buf[s : s+4096]
				oldC.Decrypt(sec, sec, uint64(s/512))
				newC.Encrypt(sec, sec, uint64(s/512))
			}
		}
	})
}
