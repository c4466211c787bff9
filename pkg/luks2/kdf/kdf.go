// Package kdf derives LUKS2 keyslot keys from passphrases: PBKDF2 (with the
// hashes LUKS2 headers name) and Argon2i/Argon2id, exactly as cryptsetup
// computes them, writing every derived byte straight into a secret.Key.
//
// The hash and Argon2 states themselves live briefly on the Go heap (the
// standard library offers no way to place them elsewhere); everything this
// package returns or keeps between rounds is in locked memory.
package kdf

import (
	"errors"
	"fmt"

	"github.com/atrest/atrest/pkg/secret"
)

// Type names a key derivation function as LUKS2 headers spell it.
type Type string

// The KDFs a LUKS2 keyslot can name.
const (
	PBKDF2   Type = "pbkdf2"
	Argon2i  Type = "argon2i"
	Argon2id Type = "argon2id"
)

// SaltSize is the salt length LUKS2 keyslots use (cryptsetup's LUKS_SALTSIZE).
const SaltSize = 32

// Bounds on Argon2 costs. The memory bounds are cryptsetup 2.6's; a header
// asking for more is refused rather than allowed to exhaust memory. Lanes are
// bounded by what golang.org/x/crypto/argon2 computes (cryptsetup itself never
// writes more than 4).
const (
	MaxArgon2Memory   = 4 * 1024 * 1024 // KiB (4 GiB)
	MinArgon2Memory   = 32              // KiB
	MaxArgon2Parallel = 255
)

// ErrUnsupported is returned for a KDF type or hash this package cannot compute.
var ErrUnsupported = errors.New("kdf: unsupported")

// Params describes one derivation. Field names follow the LUKS2 JSON: PBKDF2
// uses Hash and Iterations; Argon2 uses Time, Memory (KiB) and CPUs.
type Params struct {
	Type       Type
	Hash       string // PBKDF2 only, e.g. "sha512"
	Iterations uint32 // PBKDF2 only
	Time       uint32 // Argon2 only: passes over memory
	Memory     uint32 // Argon2 only: KiB
	CPUs       uint32 // Argon2 only: lanes
	Salt       []byte
}

// Platform returns the parameters for machine-generated, full-entropy
// secrets: PBKDF2-SHA512 with 1000 iterations, what systemd-cryptenroll and
// clevis use. A costly KDF buys nothing when the secret cannot be guessed.
// The salt is left empty; the keyslot code fills it.
func Platform() Params {
	return Params{Type: PBKDF2, Hash: "sha512", Iterations: 1000}
}

// Validate reports whether p can be computed, with an error naming the
// offending field.
func (p Params) Validate() error {
	switch p.Type {
	case PBKDF2:
		if _, err := HashSize(p.Hash); err != nil {
			return err
		}
		if p.Iterations < 1 {
			return errors.New("kdf: pbkdf2 iterations must be at least 1")
		}
	case Argon2i, Argon2id:
		if p.Time < 1 {
			return fmt.Errorf("kdf: %s time cost must be at least 1", p.Type)
		}
		if p.Memory < MinArgon2Memory || p.Memory > MaxArgon2Memory {
			return fmt.Errorf("kdf: %s memory cost %d KiB outside [%d, %d]", p.Type, p.Memory, MinArgon2Memory, MaxArgon2Memory)
		}
		if p.CPUs < 1 || p.CPUs > MaxArgon2Parallel {
			return fmt.Errorf("kdf: %s parallel cost %d outside [1, %d]", p.Type, p.CPUs, MaxArgon2Parallel)
		}
	default:
		return fmt.Errorf("%w: kdf type %q", ErrUnsupported, p.Type)
	}
	if len(p.Salt) == 0 {
		return errors.New("kdf: empty salt")
	}
	return nil
}

// Derive computes keyLen bytes from passphrase under p. The caller wipes the
// returned key.
func Derive(p Params, passphrase *secret.Key, keyLen int) (*secret.Key, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	switch p.Type {
	case PBKDF2:
		return pbkdf2Key(p.Hash, passphrase.Bytes(), p.Salt, int(p.Iterations), keyLen)
	default:
		return argon2Key(p, passphrase.Bytes(), keyLen)
	}
}

// DeriveTo is Derive into dst (len(dst) bytes), with scratch of at least
// ScratchSize bytes: both slices of locked memory the caller owns and wipes.
func DeriveTo(p Params, passphrase *secret.Key, dst, scratch []byte) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if p.Type == PBKDF2 {
		return PBKDF2To(p.Hash, passphrase.Bytes(), p.Salt, int(p.Iterations), dst, scratch)
	}
	k, err := argon2Key(p, passphrase.Bytes(), len(dst))
	if err != nil {
		return err
	}
	copy(dst, k.Bytes())
	k.Wipe()
	return nil
}

// PBKDF2Key derives keyLen bytes with PBKDF2-HMAC-hash from a key already in
// locked memory; LUKS2 digests use it to fingerprint the volume key.
func PBKDF2Key(hash string, password *secret.Key, salt []byte, iterations, keyLen int) (*secret.Key, error) {
	if iterations < 1 {
		return nil, errors.New("kdf: pbkdf2 iterations must be at least 1")
	}
	return pbkdf2Key(hash, password.Bytes(), salt, iterations, keyLen)
}
