package luks2test

import (
	"crypto/aes"

	"golang.org/x/crypto/xts"
)

// DataXTS en- or decrypts a LUKS2 data area with the volume key vk as
// dm-crypt does (aes-xts-plain64, the IV counting 512-byte units from the
// data offset), with golang.org/x/crypto/xts: the reference the tests hold
// atrest's own XTS to. It returns a new slice.
func DataXTS(vk, data []byte, sector int, encrypt bool) ([]byte, error) {
	c, err := xts.NewCipher(aes.NewCipher, vk)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(data))
	for s := 0; s < len(out); s += sector {
		if encrypt {
			c.Encrypt(out[s:s+sector], data[s:s+sector], uint64(s/512))
		} else {
			c.Decrypt(out[s:s+sector], data[s:s+sector], uint64(s/512))
		}
	}
	return out, nil
}
