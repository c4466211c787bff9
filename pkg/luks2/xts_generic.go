//go:build !amd64 || purego

package luks2

// haveAESNI is false where there is no assembly: newXTS uses crypto/aes.
const haveAESNI = false

func expandKeys(key, enc, dec []byte) { panic("luks2: no AES-NI key schedule") }

func xtsSectors(x *xtsAES, buf []byte, blocks int, first uint64, encrypt bool) {
	panic("luks2: no AES-NI XTS")
}
