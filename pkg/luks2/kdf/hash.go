package kdf

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
)

// NewHash returns a constructor for the hash a LUKS2 header names (the
// spelling cryptsetup uses: "sha1", "sha256", ...).
func NewHash(name string) (func() hash.Hash, error) {
	switch name {
	case "sha1":
		return sha1.New, nil
	case "sha224":
		return sha256.New224, nil
	case "sha256":
		return sha256.New, nil
	case "sha384":
		return sha512.New384, nil
	case "sha512":
		return sha512.New, nil
	}
	return nil, fmt.Errorf("%w: hash %q (supported: sha1, sha224, sha256, sha384, sha512)", ErrUnsupported, name)
}

// HashSize returns the digest length of the named hash.
func HashSize(name string) (int, error) {
	h, err := NewHash(name)
	if err != nil {
		return 0, err
	}
	return h().Size(), nil
}
