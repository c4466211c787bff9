package luks2

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	"testing"

	"golang.org/x/crypto/xts"

	"github.com/atrest/atrest/pkg/secret"
)

// TestXTSMatchesReference checks the keyslot area cipher against
// golang.org/x/crypto/xts for both key sizes, many sectors, both ways.
func TestXTSMatchesReference(t *testing.T) {
	for _, n := range []int{32, 64} {
		k, err := secret.Random(n)
		if err != nil {
			t.Fatal(err)
		}
		defer k.Wipe()
		ref, err := xts.NewCipher(aes.NewCipher, k.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		plain := make([]byte, 64*512)
		rand.Read(plain)
		want := make([]byte, len(plain))
		for s := 0; s < 64; s++ {
			ref.Encrypt(want[s*512:(s+1)*512], plain[s*512:(s+1)*512], uint64(s+1<<40))
		}
		got := bytes.Clone(plain)
		x, err := newXTS(k.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		for s := 0; s < 64; s++ {
			x.crypt(got[s*512:(s+1)*512], uint64(s+1<<40), true)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%d-byte key: encryption differs from x/crypto/xts", n)
		}
		slow := bytes.Clone(got)
		for s := 0; s < 64; s++ {
			x.crypt(slow[s*512:(s+1)*512], uint64(s+1<<40), false)
			x.decrypt(got[s*512:(s+1)*512], uint64(s+1<<40))
		}
		if !bytes.Equal(got, plain) || !bytes.Equal(slow, plain) {
			t.Fatalf("%d-byte key: decryption does not invert encryption", n)
		}
	}
}

// BenchmarkAreaDecrypt decrypts a 64-byte key's keyslot area (500 sectors).
func BenchmarkAreaDecrypt(b *testing.B) {
	k, err := secret.Random(64)
	if err != nil {
		b.Fatal(err)
	}
	defer k.Wipe()
	buf := make([]byte, 256000)
	b.SetBytes(int64(len(buf)))
	for range b.N {
		if err := cryptArea(k.Bytes(), buf, false); err != nil {
			b.Fatal(err)
		}
	}
}
