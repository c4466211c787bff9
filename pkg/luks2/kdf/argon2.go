package kdf

import (
	"golang.org/x/crypto/argon2"

	"github.com/atrest/atrest/pkg/secret"
)

// argon2Key runs Argon2 version 0x13 (the one cryptsetup links) and moves
// the result into locked memory at once.
func argon2Key(p Params, password []byte, keyLen int) (*secret.Key, error) {
	var raw []byte
	if p.Type == Argon2i {
		raw = argon2.Key(password, p.Salt, p.Time, p.Memory, uint8(p.CPUs), uint32(keyLen))
	} else {
		raw = argon2.IDKey(password, p.Salt, p.Time, p.Memory, uint8(p.CPUs), uint32(keyLen))
	}
	return secret.FromBytes(raw)
}
