package kdf

import (
	"crypto/hmac"
	"encoding/binary"
	"fmt"

	"github.com/atrest/atrest/pkg/luks2/internal/sha2"
	"github.com/atrest/atrest/pkg/secret"
)

// ScratchSize is the scratch space DeriveTo and PBKDF2To need.
const ScratchSize = sha2.ScratchSize

// pbkdf2Key is RFC 8018 PBKDF2 with HMAC into a new key.
func pbkdf2Key(hashName string, password, salt []byte, iterations, keyLen int) (*secret.Key, error) {
	if keyLen <= 0 {
		return nil, fmt.Errorf("kdf: invalid key length %d", keyLen)
	}
	buf, err := secret.New(keyLen + ScratchSize)
	if err != nil {
		return nil, err
	}
	defer buf.Wipe()
	b := buf.Bytes()
	if err := PBKDF2To(hashName, password, salt, iterations, b[:keyLen], b[keyLen:]); err != nil {
		return nil, err
	}
	out, err := secret.New(keyLen)
	if err != nil {
		return nil, err
	}
	copy(out.Bytes(), b[:keyLen])
	return out, nil
}

// PairScratchSize is the scratch space PBKDF2Pair needs.
const PairScratchSize = sha2.PairScratchSize

// PBKDF2Pair computes two PBKDF2-HMAC-hash results with one iteration
// count at once, each at most one digest long (two LUKS2 digests), their
// blocks compressed side by side, and reports true; or false, with dst
// untouched, where it cannot (the caller runs PBKDF2To for each). scratch
// is at least PairScratchSize bytes of locked memory, cleared on return.
func PBKDF2Pair(hashName string, password, salt [2][]byte, iterations int, dst [2][]byte, scratch []byte) bool {
	return sha2.PBKDF2Pair(hashName, password, salt, iterations, dst, scratch)
}

// PBKDF2To computes PBKDF2-HMAC-hash into dst, keeping the running U and T
// blocks in scratch (at least ScratchSize bytes). Callers on hot paths pass
// slices of one locked buffer, which spares a locked mapping per call.
// SHA-256 and SHA-512 (every keyslot and digest atrest writes) run on the
// bare compression functions of internal/sha2, two compressions per
// iteration and nothing else; other hashes go through crypto/hmac, whose
// Reset reuses the precomputed pads.
func PBKDF2To(hashName string, password, salt []byte, iterations int, dst, scratch []byte) error {
	newHash, err := NewHash(hashName)
	if err != nil {
		return err
	}
	if iterations < 1 {
		return fmt.Errorf("kdf: pbkdf2 iterations must be at least 1")
	}
	if len(scratch) < ScratchSize {
		return fmt.Errorf("kdf: scratch of %d bytes, need %d", len(scratch), ScratchSize)
	}
	if sha2.PBKDF2(hashName, password, salt, iterations, dst, scratch) {
		return nil
	}
	prf := hmac.New(newHash, password)
	size := prf.Size()
	if len(scratch) < 2*size {
		return fmt.Errorf("kdf: scratch of %d bytes, need %d", len(scratch), 2*size)
	}
	defer clear(scratch[:2*size])
	u := scratch[:size:size]
	t := scratch[size : 2*size]
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
	return nil
}
