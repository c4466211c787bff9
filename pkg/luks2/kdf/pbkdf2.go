package kdf

import (
	"crypto/hmac"
	"encoding/binary"
	"fmt"

	"github.com/atrest/atrest/pkg/secret"
)

// pbkdf2Key is RFC 8018 PBKDF2 with HMAC, writing the output and the running
// U/T blocks into locked memory. HMAC's Reset reuses the precomputed inner and
// outer pads, so each iteration costs two compressions, as in C.
func pbkdf2Key(hashName string, password, salt []byte, iterations, keyLen int) (*secret.Key, error) {
	newHash, err := NewHash(hashName)
	if err != nil {
		return nil, err
	}
	if keyLen <= 0 {
		return nil, fmt.Errorf("kdf: invalid key length %d", keyLen)
	}
	prf := hmac.New(newHash, password)
	size := prf.Size()
	out, err := secret.New(keyLen)
	if err != nil {
		return nil, err
	}
	// scratch holds U (first half) and T (second half) of the current block.
	scratch, err := secret.New(2 * size)
	if err != nil {
		out.Wipe()
		return nil, err
	}
	defer scratch.Wipe()
	u := scratch.Bytes()[:size:size]
	t := scratch.Bytes()[size:]
	dst := out.Bytes()
	var counter [4]byte
	for block := uint32(1); len(dst) > 0; block++ {
		prf.Reset()
		prf.Write(salt)
		binary.BigEndian.PutUint32(counter[:], block)
		prf.Write(counter[:])
		u = prf.Sum(u[:0])
		copy(t, u)
		for i := 1; i < iterations; i++ {
			prf.Reset()
			prf.Write(u)
			u = prf.Sum(u[:0])
			for j := range t {
				t[j] ^= u[j]
			}
		}
		dst = dst[copy(dst, t):]
	}
	return out, nil
}
