package luks2

import (
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"io"

	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

// Volume-key digest parameters for new headers: PBKDF2-SHA256 with 1000
// iterations, what cryptsetup writes when benchmarking is off. The volume
// key is random, so a costly digest would only slow every unlock.
const (
	DigestHash       = "sha256"
	DigestIterations = 1000
	digestSaltSize   = 32
	minDigestSize    = 20 // cryptsetup's LUKS_DIGESTSIZE (SHA-1)
)

// saltSource provides the salts that end up in the JSON metadata; tests
// make it deterministic so that a repeated operation writes the same bytes.
var saltSource io.Reader = rand.Reader

// digestScratch is the locked space verifyWith needs: the computed digest
// and the PBKDF2 scratch.
const digestScratch = 64 + kdf.ScratchSize

// verify checks vk against the digest, as cryptsetup's PBKDF2_digest_verify:
// a mismatch wraps ErrWrongVolumeKey.
func (d *Digest) verify(vk *secret.Key) error {
	scratch, err := secret.New(digestScratch)
	if err != nil {
		return err
	}
	defer scratch.Wipe()
	return d.verifyWith(vk, scratch.Bytes())
}

// verifyWith is verify with caller-provided locked scratch space.
func (d *Digest) verifyWith(vk *secret.Key, scratch []byte) error {
	if err := d.usable(); err != nil {
		return err
	}
	got := scratch[:len(d.Value)]
	if err := kdf.PBKDF2To(d.Hash, vk.Bytes(), d.Salt, int(d.Iterations), got, scratch[64:]); err != nil {
		return err
	}
	return d.compare(got)
}

// usable checks the digest's parameters before anything is hashed.
func (d *Digest) usable() error {
	if d.Type != "pbkdf2" {
		return fmt.Errorf("%w: digest type %q", ErrUnsupported, d.Type)
	}
	size, err := kdf.HashSize(d.Hash)
	if err != nil {
		return fmt.Errorf("digest %d: %w", d.ID, err)
	}
	if len(d.Salt) != digestSaltSize || d.Iterations == 0 ||
		len(d.Value) < minDigestSize || len(d.Value) > 64 || (len(d.Value) != minDigestSize && len(d.Value) != size) {
		return fmt.Errorf("%w: digest %d has malformed parameters", ErrInvalidHeader, d.ID)
	}
	return nil
}

// compare tells the digest got, computed from a volume key, from the one
// the header holds: a mismatch is ErrWrongVolumeKey.
func (d *Digest) compare(got []byte) error {
	if subtle.ConstantTimeCompare(got, d.Value) != 1 {
		return ErrWrongVolumeKey
	}
	return nil
}

// pairScratch is the locked space verifyPair needs: the two computed
// digests and kdf.PBKDF2Pair's scratch.
const pairScratch = 2*64 + kdf.PairScratchSize

// verifyPair is verifyWith for two volume keys, each against its digest,
// at once (kdf.PBKDF2Pair), where both digests are usable and share their
// hash and iteration count. ok is false, with nothing computed, where
// they cannot be paired: the caller verifies each.
func verifyPair(d [2]*Digest, vk [2]*secret.Key, scratch []byte) (errs [2]error, ok bool) {
	if len(scratch) < pairScratch || d[0].usable() != nil || d[1].usable() != nil ||
		d[0].Hash != d[1].Hash || d[0].Iterations != d[1].Iterations {
		return errs, false
	}
	got := [2][]byte{scratch[:len(d[0].Value)], scratch[64 : 64+len(d[1].Value)]}
	defer clear(scratch[:128])
	if !kdf.PBKDF2Pair(d[0].Hash, [2][]byte{vk[0].Bytes(), vk[1].Bytes()}, [2][]byte{d[0].Salt, d[1].Salt},
		int(d[0].Iterations), got, scratch[128:]) {
		return errs, false
	}
	return [2]error{d[0].compare(got[0]), d[1].compare(got[1])}, true
}

// newDigest fingerprints vk for a new header.
func newDigest(id int, vk *secret.Key) (*Digest, error) {
	salt := make([]byte, digestSaltSize)
	if _, err := io.ReadFull(saltSource, salt); err != nil {
		return nil, err
	}
	size, _ := kdf.HashSize(DigestHash)
	sum, err := kdf.PBKDF2Key(DigestHash, vk, salt, DigestIterations, size)
	if err != nil {
		return nil, err
	}
	defer sum.Wipe()
	return &Digest{
		ID: id, Type: "pbkdf2", Keyslots: []int{}, Segments: []int{0},
		Hash: DigestHash, Iterations: DigestIterations, Salt: salt,
		Value: append([]byte(nil), sum.Bytes()...),
	}, nil
}

// VerifyVolumeKey checks that vk is the key of the data segment.
func (h *Header) VerifyVolumeKey(vk *secret.Key) error {
	d, err := h.segmentDigest()
	if err != nil {
		return err
	}
	return d.verify(vk)
}

// segmentDigest returns the digest of the data segment's key: the one
// every volume key handed out or enrolled is checked against.
func (h *Header) segmentDigest() (*Digest, error) {
	seg, err := h.dataSegment()
	if err != nil {
		return nil, err
	}
	d := h.DigestForSegment(seg.ID)
	if d == nil {
		return nil, fmt.Errorf("%w: segment %d has no digest", ErrInvalidHeader, seg.ID)
	}
	return d, nil
}
