// Package af implements the LUKS anti-forensic information splitter
// (AF_split and AF_merge of cryptsetup's lib/luks1/af.c), which LUKS2
// keyslots of af type "luks1" use: a key is expanded into stripes so that
// destroying any part of the stored material destroys the key.
//
// Split material is as sensitive as the key it hides, so both directions
// work on secret.Key buffers and wipe their scratch space.
package af

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/atrest/atrest/pkg/luks2/internal/sha2"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

// Stripes is the stripe count every LUKS2 keyslot uses; cryptsetup 2.6
// hard-codes it whatever the header says.
const Stripes = 4000

// SectorSize is the unit the split material is padded to on disk.
const SectorSize = 512

// Size returns the on-disk size of the split material for a key of keyLen
// bytes: keyLen*stripes rounded up to whole 512-byte sectors.
func Size(keyLen, stripes int) int {
	return (keyLen*stripes + SectorSize - 1) / SectorSize * SectorSize
}

// Split returns Size(key.Len(), stripes) bytes of split material in locked
// memory (the tail past keyLen*stripes is zero). hashName is the keyslot's
// af hash.
func Split(key *secret.Key, stripes int, hashName string) (*secret.Key, error) {
	return split(key, stripes, hashName, rand.Reader)
}

func split(key *secret.Key, stripes int, hashName string, rnd io.Reader) (*secret.Key, error) {
	n := key.Len()
	if n == 0 || stripes < 1 {
		return nil, errors.New("af: empty key or no stripes")
	}
	buf, err := secret.New(n + ScratchSize)
	if err != nil {
		return nil, err
	}
	defer buf.Wipe()
	diffuse, err := newDiffuser(hashName, buf.Bytes()[n:])
	if err != nil {
		return nil, err
	}
	out, err := secret.New(Size(n, stripes))
	if err != nil {
		return nil, err
	}
	dst, block := out.Bytes(), buf.Bytes()[:n]
	for i := 0; i < stripes-1; i++ {
		stripe := dst[i*n : (i+1)*n]
		if _, err := io.ReadFull(rnd, stripe); err != nil {
			out.Wipe()
			return nil, fmt.Errorf("af: random stripe: %w", err)
		}
		xor(block, stripe, block)
		diffuse(block)
	}
	xor(dst[(stripes-1)*n:stripes*n], key.Bytes(), block)
	return out, nil
}

// Merge recovers a key of keyLen bytes from split material (at least
// keyLen*stripes bytes, as Split wrote it).
func Merge(material *secret.Key, keyLen, stripes int, hashName string) (*secret.Key, error) {
	scratch, err := secret.New(ScratchSize)
	if err != nil {
		return nil, err
	}
	defer scratch.Wipe()
	return MergeStreaming(material.Bytes(), keyLen, stripes, hashName, scratch.Bytes(), len(material.Bytes()), nil)
}

// MergeBytes is Merge for material in locked memory the caller owns (a
// slice of a larger secret.Key), working in scratch (at least ScratchSize
// bytes of locked memory, cleared on return).
func MergeBytes(src []byte, keyLen, stripes int, hashName string, scratch []byte) (*secret.Key, error) {
	return MergeStreaming(src, keyLen, stripes, hashName, scratch, len(src), nil)
}

// MergeStreaming is MergeBytes for material that is still being produced:
// only src[:ready] is there at first, and wait blocks until the rest is.
// The merge is a chain of hashes, so starting it early hides the time spent
// decrypting the rest of the material.
func MergeStreaming(src []byte, keyLen, stripes int, hashName string, scratch []byte, ready int, wait func()) (*secret.Key, error) {
	if keyLen <= 0 || stripes < 1 || len(src) < keyLen*stripes {
		return nil, fmt.Errorf("af: %d bytes of material cannot hold %d stripes of %d bytes", len(src), stripes, keyLen)
	}
	if len(scratch) < ScratchSize {
		return nil, fmt.Errorf("af: scratch of %d bytes, need %d", len(scratch), ScratchSize)
	}
	defer clear(scratch[:ScratchSize])
	diffuse, err := newDiffuser(hashName, scratch)
	if err != nil {
		return nil, err
	}
	key, err := secret.New(keyLen)
	if err != nil {
		return nil, err
	}
	block := key.Bytes()
	need := func(end int) {
		if end > ready && wait != nil {
			wait()
			ready = len(src)
		}
	}
	for i := 0; i < stripes-1; i++ {
		need((i + 1) * keyLen)
		xor(block, src[i*keyLen:(i+1)*keyLen], block)
		diffuse(block)
	}
	need(stripes * keyLen)
	xor(block, src[(stripes-1)*keyLen:stripes*keyLen], block)
	return key, nil
}

func xor(dst, a, b []byte) { subtle.XORBytes(dst, a, b) }

// ScratchSize is the locked scratch space a merge works in.
const ScratchSize = sha2.ScratchSize

// newDiffuser returns the diffusion of a block in place: each digest-sized
// piece i becomes the hash of its big-endian index and itself. SHA-256 and
// SHA-512 run as bare compressions in scratch (internal/sha2); other hashes
// go through hash.Hash, one state and one digest buffer reused across the
// rounds, the digest in scratch.
func newDiffuser(hashName string, scratch []byte) (func([]byte), error) {
	if d := sha2.Diffuser(hashName, scratch); d != nil {
		return d, nil
	}
	newHash, err := kdf.NewHash(hashName)
	if err != nil {
		return nil, fmt.Errorf("af: %w", err)
	}
	h := newHash()
	size := h.Size()
	sum := scratch[:0:size]
	var iv [4]byte
	return func(block []byte) {
		for i := 0; i*size < len(block); i++ {
			piece := block[i*size : min((i+1)*size, len(block))]
			h.Reset()
			binary.BigEndian.PutUint32(iv[:], uint32(i))
			h.Write(iv[:])
			h.Write(piece)
			sum = h.Sum(sum[:0])
			copy(piece, sum)
		}
	}, nil
}

// LaneWidth is how many keys MergeLanes merges at once: 8 where the CPU
// has AVX-512, 0 elsewhere. The eight cost about what three merged one by
// one do, whatever how many of them are in use (BenchmarkMergeSHA256Lanes
// in internal/sha2 against BenchmarkDiffuse64 × 4000 stripes).
func LaneWidth() int {
	if sha2.CanMergeLanes() {
		return sha2.MergeLanes
	}
	return 0
}

// LanesScratchSize is the locked scratch MergeLanes works in.
const LanesScratchSize = sha2.MergeScratchSize

// Laneable reports whether MergeLanes can merge a key of keyLen bytes
// split over stripes with hashName: a 64-byte key with SHA-256, what
// atrest's keyslots and cryptsetup's defaults for aes-xts-plain64 use,
// where the CPU runs the lanes.
func Laneable(keyLen, stripes int, hashName string) bool {
	return LaneWidth() > 0 && keyLen == sha2.MergeKeySize && hashName == "sha256" && stripes >= 1
}

// MergeLanes is MergeBytes for up to LaneWidth keys at once, all Laneable:
// key i from srcs[i], in sixteen SHA-256 lanes. It returns nil for a set
// it cannot merge, or when locked memory for the keys runs out (the
// caller merges each key alone and meets that error there). scratch holds
// at least LanesScratchSize bytes of locked memory, cleared on return.
func MergeLanes(srcs [][]byte, keyLen, stripes int, hashName string, scratch []byte) []*secret.Key {
	if len(srcs) == 0 || len(srcs) > LaneWidth() || !Laneable(keyLen, stripes, hashName) {
		return nil
	}
	keys := make([]*secret.Key, len(srcs))
	var jobs [sha2.MergeLanes]sha2.MergeJob
	merged := false
	defer func() {
		if !merged {
			for _, k := range keys {
				k.Wipe()
			}
		}
	}()
	for i, src := range srcs {
		k, err := secret.New(keyLen)
		if err != nil {
			return nil
		}
		keys[i] = k
		jobs[i] = sha2.MergeJob{Src: src, Dst: k.Bytes()}
	}
	if merged = sha2.MergeSHA256Lanes(jobs[:len(srcs)], stripes, scratch); !merged {
		return nil
	}
	return keys
}
