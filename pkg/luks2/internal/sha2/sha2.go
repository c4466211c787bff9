// Package sha2 runs the two hash loops of a keyslot open, PBKDF2-HMAC and
// the anti-forensic diffusion, on SHA-256 and SHA-512 used as bare
// compression functions (SHA-NI and AVX2 on amd64, the assembly of Go's
// crypto/sha256 and crypto/sha512).
//
// Both loops hash thousands of messages of one block each (PBKDF2: a
// digest and its padding, 2000 compressions for 1000 iterations; AF: a
// 4-byte counter, a digest-sized piece and the padding, 8000 compressions
// for a 64-byte key). Through hash.Hash every such message pays Reset,
// Write, Sum and the copies of the state they make, which cost more than
// the compression itself. Here each message is laid out once as its final
// padded block and compressed directly; HMAC's inner and outer states are
// computed once per key. The states and blocks live in the caller's
// scratch, locked memory the caller wipes.
package sha2

import (
	"crypto/subtle"
	"encoding/binary"
	"unsafe"
)

// ScratchSize is the scratch space PBKDF2 and Diffuser need: room for the
// states and blocks, and for aligning them.
const ScratchSize = align + 3*64 + 2*chunk512 + 64

const align = 64

type word interface{ ~uint32 | ~uint64 }

// alg is one hash as a compression function.
type alg[W word] struct {
	size, blockSize, lenSize int // digest, block and length-field bytes
	iv                       [8]W
	block                    func(*[8]W, []byte)
	block2                   func(a, b *[8]W, pa, pb []byte) // one block each
}

var (
	sha256Alg = &alg[uint32]{32, chunk256, 8, [8]uint32{
		0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
	}, block256, block256x2}
	sha512Alg = &alg[uint64]{64, chunk512, 16, [8]uint64{
		0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
		0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179,
	}, block512, func(a, b *[8]uint64, pa, pb []byte) {
		block512(a, pa[:chunk512])
		block512(b, pb[:chunk512])
	}}
)

// PBKDF2 computes PBKDF2-HMAC with the named hash (RFC 8018) into dst and
// reports true, or reports false without touching anything for a hash
// other than sha256 and sha512 or a password longer than the hash's block
// (which HMAC would hash first). scratch holds at least ScratchSize bytes
// of locked memory; it is cleared on return. iterations is at least 1.
func PBKDF2(hashName string, password, salt []byte, iterations int, dst, scratch []byte) bool {
	a := named(hashName)
	return a != nil && a.pbkdf2(password, salt, iterations, dst, scratch)
}

// hasher is what the exported functions ask of an alg, whatever its word.
type hasher interface {
	pbkdf2(password, salt []byte, iterations int, dst, scratch []byte) bool
	pbkdf2Pair(password, salt [2][]byte, iterations int, dst [2][]byte, scratch []byte) bool
	diffuser(scratch []byte) func(block []byte)
}

// named returns the alg of sha256 or sha512, or nil.
func named(hashName string) hasher {
	switch hashName {
	case "sha256":
		return sha256Alg
	case "sha512":
		return sha512Alg
	}
	return nil
}

// Diffuser returns the anti-forensic diffusion of cryptsetup's af.c with
// the named hash (sha256 or sha512), or nil for other hashes: each
// digest-sized piece i of a block becomes H(be32(i) || piece), truncated
// to the piece. It works in scratch (ScratchSize bytes of locked memory the
// caller clears when done).
func Diffuser(hashName string, scratch []byte) func(block []byte) {
	if a := named(hashName); a != nil {
		return a.diffuser(scratch)
	}
	return nil
}

// aligned returns scratch from its first 64-byte aligned byte, so that the
// states can be viewed as word arrays.
func aligned(scratch []byte) []byte {
	off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(scratch))) & (align - 1))
	return scratch[off : off+ScratchSize-align]
}

// state views 64 aligned bytes of b as a hash state.
func state[W word](b []byte) *[8]W {
	return (*[8]W)(unsafe.Pointer(unsafe.SliceData(b[:64])))
}

// put stores the state big-endian into dst (at least size bytes): the
// digest.
func (a *alg[W]) put(dst []byte, s *[8]W) {
	if a.size == 32 {
		_ = dst[31]
		for i := range 8 {
			binary.BigEndian.PutUint32(dst[4*i:], uint32(s[i]))
		}
		return
	}
	_ = dst[63]
	for i := range 8 {
		binary.BigEndian.PutUint64(dst[8*i:], uint64(s[i]))
	}
}

// pad completes buf, holding n message bytes, as a final block of a
// message of total bytes.
func (a *alg[W]) pad(buf []byte, n, total int) {
	buf[n] = 0x80
	clear(buf[n+1:])
	binary.BigEndian.PutUint64(buf[a.blockSize-8:], uint64(total)<<3)
}

// sum hashes parts into st, which has compressed prefix bytes already,
// finishes with the padding and writes the digest into out. buf is a
// block of scratch.
func (a *alg[W]) sum(st *[8]W, prefix int, buf, out []byte, parts ...[]byte) {
	n, total := 0, prefix
	for _, p := range parts {
		total += len(p)
		for len(p) > 0 {
			c := copy(buf[n:a.blockSize], p)
			n, p = n+c, p[c:]
			if n == a.blockSize {
				a.block(st, buf)
				n = 0
			}
		}
	}
	buf[n] = 0x80
	clear(buf[n+1 : a.blockSize])
	if n+1+a.lenSize > a.blockSize {
		a.block(st, buf[:a.blockSize])
		clear(buf[:a.blockSize])
	}
	binary.BigEndian.PutUint64(buf[a.blockSize-8:], uint64(total)<<3)
	a.block(st, buf[:a.blockSize])
	a.put(out, st)
}

func (a *alg[W]) pbkdf2(password, salt []byte, iterations int, dst, scratch []byte) bool {
	if len(password) > a.blockSize {
		return false
	}
	w := aligned(scratch)
	defer clear(w)
	c := a.newChain(password, w)
	for n := uint32(1); len(dst) > 0; n++ {
		a.start(&c, salt, n)
		for range iterations - 1 {
			*c.st = *c.istate
			a.block(c.st, c.ibuf)
			a.put(c.obuf, c.st)
			*c.st = *c.ostate
			a.block(c.st, c.obuf)
			a.put(c.ibuf, c.st)
			subtle.XORBytes(c.t, c.t, c.ibuf[:a.size])
		}
		dst = dst[copy(dst, c.t):]
	}
	return true
}

// chain is one PBKDF2 computation's running state in scratch: HMAC's
// inner and outer states of the password, the working state, the inner
// hash's block (which holds each U once it is computed), the outer
// hash's block, and T, the XOR of the Us.
type chain[W word] struct {
	istate, ostate, st *[8]W
	ibuf, obuf, t      []byte
}

// newChain lays a chain out in w (aligned scratch, ScratchSize-align
// bytes) and computes password's HMAC states.
func (a *alg[W]) newChain(password, w []byte) chain[W] {
	bs := a.blockSize
	c := chain[W]{
		istate: state[W](w[0:]), ostate: state[W](w[64:]), st: state[W](w[128:]),
		ibuf: w[192 : 192+bs], obuf: w[192+bs : 192+2*bs], t: w[192+2*bs : 192+2*bs+a.size],
	}
	a.hmacKey(password, c.istate, c.ostate, c.ibuf, c.obuf)
	return c
}

// start begins output block n: U1 = HMAC(salt || be32(n)) into T and into
// ibuf as the next inner hash's padded block; every later U is one padded
// block too, the inner hash's message in ibuf and its digest, the outer
// hash's message, in obuf.
func (a *alg[W]) start(c *chain[W], salt []byte, n uint32) {
	bs, s := a.blockSize, a.size
	a.firstU(c.istate, c.ostate, c.st, salt, n, c.ibuf, c.obuf)
	a.pad(c.ibuf, s, bs+s)
	a.put(c.ibuf, c.st)
	copy(c.t, c.ibuf[:s])
}

// PBKDF2Pair computes the PBKDF2-HMAC of two passwords with the named
// hash and the same iteration count into dst[0] and dst[1], each at most
// one digest long, and reports true; the two chains' blocks are compressed
// side by side (SHA-NI interleaved), which costs little more than one
// chain, whose every block waits for the one before. It reports false
// without touching dst where it cannot: a hash other than sha256 and
// sha512, a password longer than a block, a dst empty or longer than a
// digest, or scratch shorter than PairScratchSize. scratch is locked memory
// the caller owns; it is cleared on return.
func PBKDF2Pair(hashName string, password, salt [2][]byte, iterations int, dst [2][]byte, scratch []byte) bool {
	a := named(hashName)
	return a != nil && a.pbkdf2Pair(password, salt, iterations, dst, scratch)
}

// PairScratchSize is the scratch PBKDF2Pair needs: PBKDF2's for each.
const PairScratchSize = 2 * ScratchSize

func (a *alg[W]) pbkdf2Pair(password, salt [2][]byte, iterations int, dst [2][]byte, scratch []byte) bool {
	bs, s := a.blockSize, a.size
	if len(scratch) < PairScratchSize || iterations < 1 {
		return false
	}
	for j := range 2 {
		if len(password[j]) > bs || len(dst[j]) == 0 || len(dst[j]) > s {
			return false
		}
	}
	var c [2]chain[W]
	for j := range 2 {
		w := aligned(scratch[j*ScratchSize : (j+1)*ScratchSize])
		defer clear(w)
		c[j] = a.newChain(password[j], w)
		a.start(&c[j], salt[j], 1)
	}
	x, y := &c[0], &c[1]
	for range iterations - 1 {
		*x.st, *y.st = *x.istate, *y.istate
		a.block2(x.st, y.st, x.ibuf, y.ibuf)
		a.put(x.obuf, x.st)
		a.put(y.obuf, y.st)
		*x.st, *y.st = *x.ostate, *y.ostate
		a.block2(x.st, y.st, x.obuf, y.obuf)
		a.put(x.ibuf, x.st)
		a.put(y.ibuf, y.st)
		subtle.XORBytes(x.t, x.t, x.ibuf[:s])
		subtle.XORBytes(y.t, y.t, y.ibuf[:s])
	}
	copy(dst[0], x.t)
	copy(dst[1], y.t)
	return true
}

// hmacKey compresses HMAC's two pads of password (at most a block: the
// key XOR ipad and XOR opad) into istate and ostate, once per key. ibuf
// and obuf are a block of scratch each.
func (a *alg[W]) hmacKey(password []byte, istate, ostate *[8]W, ibuf, obuf []byte) {
	for i := range a.blockSize {
		var k byte
		if i < len(password) {
			k = password[i]
		}
		ibuf[i], obuf[i] = k^0x36, k^0x5c
	}
	*istate, *ostate = a.iv, a.iv
	a.block(istate, ibuf)
	a.block(ostate, obuf)
}

// firstU computes PBKDF2's U1 of block n, HMAC(salt || be32(n)) under the
// pads' states, into st: its words are the digest's. The inner digest is
// left in obuf, padded as the outer hash's block.
func (a *alg[W]) firstU(istate, ostate, st *[8]W, salt []byte, n uint32, ibuf, obuf []byte) {
	var counter [4]byte
	binary.BigEndian.PutUint32(counter[:], n)
	*st = *istate
	a.sum(st, a.blockSize, ibuf, obuf, salt, counter[:])
	a.pad(obuf, a.size, a.blockSize+a.size)
	*st = *ostate
	a.block(st, obuf)
}

func (a *alg[W]) diffuser(scratch []byte) func(block []byte) {
	w := aligned(scratch)
	bs := a.blockSize
	st := [2]*[8]W{state[W](w[0:]), state[W](w[64:])}
	buf := [2][]byte{w[128 : 128+bs], w[128+bs : 128+2*bs]}
	dig := w[128+2*bs : 128+2*bs+a.size]
	// load lays out piece i as the one block of its message into buf[j].
	// The counter and the padding depend only on i and the piece's
	// length, the same in every round of a merge: they are written when
	// those change, the piece itself every time.
	laid := [2][2]int{{-1, -1}, {-1, -1}} // i and length buf[j] is laid out for
	load := func(j, i int, piece []byte) {
		if laid[j] != [2]int{i, len(piece)} {
			binary.BigEndian.PutUint32(buf[j], uint32(i))
			a.pad(buf[j], 4+len(piece), 4+len(piece))
			laid[j] = [2]int{i, len(piece)}
		}
		copy(buf[j][4:], piece)
		*st[j] = a.iv
	}
	store := func(j int, piece []byte) {
		if len(piece) == a.size {
			a.put(piece, st[j])
		} else {
			a.put(dig, st[j])
			copy(piece, dig)
		}
	}
	// The pieces' hashes are independent: two at a time.
	return func(block []byte) {
		for i := 0; i*a.size < len(block); i += 2 {
			p0 := block[i*a.size : min((i+1)*a.size, len(block))]
			load(0, i, p0)
			if (i+1)*a.size >= len(block) {
				a.block(st[0], buf[0])
				store(0, p0)
				break
			}
			p1 := block[(i+1)*a.size : min((i+2)*a.size, len(block))]
			load(1, i+1, p1)
			a.block2(st[0], st[1], buf[0], buf[1])
			store(0, p0)
			store(1, p1)
		}
	}
}
