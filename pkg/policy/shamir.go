package policy

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/secretsharing"

	"github.com/atrest/atrest/pkg/secret"
)

// SecretSize is the length of a branch secret and of every share: one
// ristretto255 scalar.
const SecretSize = 32

// ErrShareMismatch means an unwrapped share does not match the digest
// its token records: the KMS returned another share than the one wrapped
// here (a ciphertext moved between shares of the volume), so it is not
// used.
var ErrShareMismatch = errors.New("share does not match its digest")

// ErrTooFewShares means fewer than K shares are at hand.
var ErrTooFewShares = errors.New("too few shares")

var g = group.Ristretto255

// NewSecret returns a fresh branch secret: a random scalar's encoding.
func NewSecret() (*secret.Key, error) {
	s := g.RandomScalar(rand.Reader)
	return scalarKey(s)
}

// scalarKey moves a scalar's encoding into a secret.Key and wipes the
// intermediate buffer. The scalar itself is circl's ordinary heap memory
// (docs/policy.md says so); the caller drops it at once.
func scalarKey(s group.Scalar) (*secret.Key, error) {
	b, err := s.MarshalBinary()
	if err != nil {
		return nil, err
	}
	defer clear(b)
	s.SetUint64(0)
	return secret.FromBytes(b)
}

func keyScalar(k *secret.Key) (group.Scalar, error) {
	if k.Len() != SecretSize {
		return nil, fmt.Errorf("secret of %d bytes, want %d", k.Len(), SecretSize)
	}
	s := g.NewScalar()
	if err := s.UnmarshalBinary(k.Bytes()); err != nil {
		return nil, fmt.Errorf("not a ristretto255 scalar: %w", err)
	}
	return s, nil
}

// Split splits secret into n shares of which any k rebuild it. Share i
// (0-based) has the Shamir id i+1. The caller wipes every share.
func Split(sec *secret.Key, k, n int) ([]*secret.Key, error) {
	if k < 1 || k > n || n > MaxShares {
		return nil, fmt.Errorf("split: k %d of n %d", k, n)
	}
	s, err := keyScalar(sec)
	if err != nil {
		return nil, err
	}
	defer s.SetUint64(0)
	shares := secretsharing.New(rand.Reader, uint(k-1), s).Share(uint(n))
	out := make([]*secret.Key, n)
	for i, sh := range shares {
		if out[i], err = scalarKey(sh.Value); err != nil {
			wipe(out)
			return nil, err
		}
	}
	return out, nil
}

// Combine rebuilds a secret from k shares: have maps a share's 0-based
// index to its value. The caller wipes the result; have stays its own.
func Combine(k int, have map[int]*secret.Key) (*secret.Key, error) {
	if len(have) < k {
		return nil, fmt.Errorf("%w: %d of %d", ErrTooFewShares, len(have), k)
	}
	var shares []secretsharing.Share
	for i, v := range have {
		if len(shares) == k {
			break
		}
		val, err := keyScalar(v)
		if err != nil {
			return nil, fmt.Errorf("share %d: %w", i+1, err)
		}
		shares = append(shares, secretsharing.Share{ID: g.NewScalar().SetUint64(uint64(i + 1)), Value: val})
	}
	defer func() {
		for _, s := range shares {
			s.Value.SetUint64(0)
		}
	}()
	s, err := secretsharing.Recover(uint(k-1), shares)
	if err != nil {
		return nil, err
	}
	return scalarKey(s)
}

// Digest is what a token records to recognise share index of volume
// uuid: SHA-256 over a label, the volume, the index and the share. A
// share is a uniformly random 256-bit value, so the digest tells nothing
// about it.
func Digest(uuid string, index int, share *secret.Key) string {
	h := sha256.New()
	h.Write([]byte("atrest-share\x00" + uuid + "\x00" + strconv.Itoa(index) + "\x00"))
	h.Write(share.Bytes())
	return base64.RawStdEncoding.EncodeToString(h.Sum(nil))
}

// CheckDigest reports ErrShareMismatch when share is not the one digest
// was made of.
func CheckDigest(uuid string, index int, share *secret.Key, digest string) error {
	if subtle.ConstantTimeCompare([]byte(Digest(uuid, index, share)), []byte(digest)) != 1 {
		return fmt.Errorf("share %d: %w", index+1, ErrShareMismatch)
	}
	return nil
}

func wipe(keys []*secret.Key) {
	for _, k := range keys {
		k.Wipe()
	}
}
