package luks2

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"

	"github.com/atrest/atrest/pkg/secret"
)

// xtsAES is AES-XTS (IEEE 1619) with the plain64 IV: the tweak of a sector
// is its number, little-endian, encrypted with the second key half. It
// works in place on whole sectors. (golang.org/x/crypto/xts computes the
// same, four times slower: the keyslot area of every unlock passes through
// here.)
type xtsAES struct {
	data, tweak cipher.Block
}

func newXTS(key *secret.Key) (*xtsAES, error) {
	k := key.Bytes()
	if len(k)%2 != 0 {
		return nil, fmt.Errorf("keyslot cipher: odd XTS key length %d", len(k))
	}
	data, err := aes.NewCipher(k[:len(k)/2])
	if err != nil {
		return nil, fmt.Errorf("keyslot cipher: %w", err)
	}
	tweak, err := aes.NewCipher(k[len(k)/2:])
	if err != nil {
		return nil, fmt.Errorf("keyslot cipher: %w", err)
	}
	return &xtsAES{data: data, tweak: tweak}, nil
}

// crypt en- or decrypts one sector (a multiple of 16 bytes) in place.
func (x *xtsAES) crypt(sector []byte, num uint64, encrypt bool) {
	var t [16]byte
	binary.LittleEndian.PutUint64(t[:8], num)
	x.tweak.Encrypt(t[:], t[:])
	lo, hi := binary.LittleEndian.Uint64(t[:8]), binary.LittleEndian.Uint64(t[8:])
	for i := 0; i+16 <= len(sector); i += 16 {
		b := sector[i : i+16 : i+16]
		binary.LittleEndian.PutUint64(b[:8], binary.LittleEndian.Uint64(b[:8])^lo)
		binary.LittleEndian.PutUint64(b[8:], binary.LittleEndian.Uint64(b[8:])^hi)
		if encrypt {
			x.data.Encrypt(b, b)
		} else {
			x.data.Decrypt(b, b)
		}
		binary.LittleEndian.PutUint64(b[:8], binary.LittleEndian.Uint64(b[:8])^lo)
		binary.LittleEndian.PutUint64(b[8:], binary.LittleEndian.Uint64(b[8:])^hi)
		// Multiply the tweak by x in GF(2^128).
		carry := hi >> 63
		hi = hi<<1 | lo>>63
		lo = lo<<1 ^ carry*0x87
	}
}
