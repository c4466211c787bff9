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
	"hash"
	"io"

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
// memory (the tail past keyLen*stripes is zero). newHash is the keyslot's af
// hash.
func Split(key *secret.Key, stripes int, newHash func() hash.Hash) (*secret.Key, error) {
	return split(key, stripes, newHash, rand.Reader)
}

func split(key *secret.Key, stripes int, newHash func() hash.Hash, rnd io.Reader) (*secret.Key, error) {
	n := key.Len()
	if n == 0 || stripes < 1 {
		return nil, errors.New("af: empty key or no stripes")
	}
	out, err := secret.New(Size(n, stripes))
	if err != nil {
		return nil, err
	}
	buf, err := secret.New(n)
	if err != nil {
		out.Wipe()
		return nil, err
	}
	defer buf.Wipe()
	d := newDiffuser(newHash)
	dst, block := out.Bytes(), buf.Bytes()
	for i := 0; i < stripes-1; i++ {
		stripe := dst[i*n : (i+1)*n]
		if _, err := io.ReadFull(rnd, stripe); err != nil {
			out.Wipe()
			return nil, fmt.Errorf("af: random stripe: %w", err)
		}
		xor(block, stripe, block)
		d.diffuse(block)
	}
	xor(dst[(stripes-1)*n:stripes*n], key.Bytes(), block)
	d.wipe()
	return out, nil
}

// Merge recovers a key of keyLen bytes from split material (at least
// keyLen*stripes bytes, as Split wrote it).
func Merge(material *secret.Key, keyLen, stripes int, newHash func() hash.Hash) (*secret.Key, error) {
	return MergeBytes(material.Bytes(), keyLen, stripes, newHash)
}

// MergeBytes is Merge for material in locked memory the caller owns (a
// slice of a larger secret.Key).
func MergeBytes(src []byte, keyLen, stripes int, newHash func() hash.Hash) (*secret.Key, error) {
	return MergeStreaming(src, keyLen, stripes, newHash, len(src), nil)
}

// MergeStreaming is MergeBytes for material that is still being produced:
// only src[:ready] is there at first, and wait blocks until the rest is.
// The merge is a chain of hashes, so starting it early hides the time spent
// decrypting the rest of the material.
func MergeStreaming(src []byte, keyLen, stripes int, newHash func() hash.Hash, ready int, wait func()) (*secret.Key, error) {
	if keyLen <= 0 || stripes < 1 || len(src) < keyLen*stripes {
		return nil, fmt.Errorf("af: %d bytes of material cannot hold %d stripes of %d bytes", len(src), stripes, keyLen)
	}
	key, err := secret.New(keyLen)
	if err != nil {
		return nil, err
	}
	d := newDiffuser(newHash)
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
		d.diffuse(block)
	}
	need(stripes * keyLen)
	xor(block, src[(stripes-1)*keyLen:stripes*keyLen], block)
	d.wipe()
	return key, nil
}

func xor(dst, a, b []byte) { subtle.XORBytes(dst, a, b) }

// diffuser hashes a block in digest-sized pieces, each prefixed with its
// big-endian index, in place. One hash state and one digest buffer are
// reused across the 4000 rounds: allocation would dominate otherwise.
type diffuser struct {
	h   hash.Hash
	sum []byte
	iv  [4]byte
}

func newDiffuser(newHash func() hash.Hash) *diffuser {
	h := newHash()
	return &diffuser{h: h, sum: make([]byte, 0, h.Size())}
}

func (d *diffuser) diffuse(block []byte) {
	size := d.h.Size()
	for i := 0; i*size < len(block); i++ {
		piece := block[i*size : min((i+1)*size, len(block))]
		d.h.Reset()
		binary.BigEndian.PutUint32(d.iv[:], uint32(i))
		d.h.Write(d.iv[:])
		d.h.Write(piece)
		d.sum = d.h.Sum(d.sum[:0])
		copy(piece, d.sum)
	}
}

// wipe clears the last digest, which is derived from key material.
func (d *diffuser) wipe() {
	clear(d.sum[:cap(d.sum)])
	d.h.Reset()
}
