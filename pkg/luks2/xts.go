package luks2

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

// xtsAES is AES-XTS (IEEE 1619) with the plain64 IV: the tweak of a sector
// is its number, little-endian, encrypted with the second key half. It
// works in place on whole sectors. (golang.org/x/crypto/xts computes the
// same at less than half the speed: the keyslot area of every unlock passes
// through here.)
type xtsAES struct {
	data, tweak cipher.Block
	cbc         cipher.BlockMode // CBC decrypter over data, for bulk decryption
}

func newXTS(k []byte) (*xtsAES, error) {
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
	var zero [16]byte
	return &xtsAES{data: data, tweak: tweak, cbc: cipher.NewCBCDecrypter(data, zero[:])}, nil
}

// fork returns a copy for use by another goroutine: the AES blocks are
// shared (they are stateless), the CBC decrypter is not.
func (x *xtsAES) fork() *xtsAES {
	var zero [16]byte
	return &xtsAES{data: x.data, tweak: x.tweak, cbc: cipher.NewCBCDecrypter(x.data, zero[:])}
}

// decrypt decrypts one 512-byte sector in place. It hands the CBC
// decrypter all 32 blocks in one call (Go's amd64 CBC decrypt is not
// pipelined, so this saves per-block calls, not AES latency): with X = C xor T and
// a zero IV, CBC yields D(X[i]) xor X[i-1], so P[i] = CBC[i] xor X[i-1]
// xor T[i].
func (x *xtsAES) decrypt(sector []byte, num uint64) {
	var tw, xs [areaSectorSize]byte
	defer clear(tw[:])
	defer clear(xs[:])
	var t [16]byte
	binary.LittleEndian.PutUint64(t[:8], num)
	x.tweak.Encrypt(t[:], t[:])
	lo, hi := binary.LittleEndian.Uint64(t[:8]), binary.LittleEndian.Uint64(t[8:])
	for i := 0; i < areaSectorSize; i += 16 {
		binary.LittleEndian.PutUint64(tw[i:], lo)
		binary.LittleEndian.PutUint64(tw[i+8:], hi)
		carry := hi >> 63
		hi = hi<<1 | lo>>63
		lo = lo<<1 ^ carry*0x87
	}
	subtle.XORBytes(xs[:], sector, tw[:])
	var zero [16]byte
	x.cbc.(interface{ SetIV([]byte) }).SetIV(zero[:])
	x.cbc.CryptBlocks(sector, xs[:])
	subtle.XORBytes(sector[16:], sector[16:], xs[:areaSectorSize-16])
	subtle.XORBytes(sector, sector, tw[:])
}

// crypt en- or decrypts one sector (a multiple of 16 bytes) in place, one
// block at a time.
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
