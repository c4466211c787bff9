package kdf

import (
	"github.com/atrest/atrest/pkg/luks2/internal/sha2"
	"github.com/atrest/atrest/pkg/secret"
)

// Lanes is how many derivations DeriveLanes runs at once.
const Lanes = sha2.Lanes

// LanesScratchSize is the scratch DeriveLanes needs.
const LanesScratchSize = sha2.LanesScratchSize

// LaneWidth is how many derivations DeriveLanes runs at once in one SIMD
// compression: 8 where the CPU has AVX-512, 4 with AVX2, and 0 without,
// where it costs what the derivations one by one do. A group of up to
// LaneWidth derivations costs about what two one by one do, whatever its
// size.
func LaneWidth() int { return sha2.LaneWidth() }

// Laneable reports whether DeriveLanes can derive a key of keyLen bytes
// from a passphrase of passLen bytes with p: PBKDF2-SHA512 (what platform
// and recovery keyslots use, atrest's and systemd-cryptenroll's), a
// passphrase of at most one block and a key of at most one SHA-512 block.
func Laneable(p Params, passLen, keyLen int) bool {
	return p.Type == PBKDF2 && p.Hash == "sha512" && p.Validate() == nil && passLen <= 128 && keyLen > 0 && keyLen <= 64
}

// DeriveLanes derives dst[i] from passphrases[i] with ps[i], for up to
// Lanes derivations that are all Laneable, at once: the iterations of all
// of them run together, eight lanes per compression on AVX-512 and four on
// AVX2 where the CPU has them. It reports false, touching nothing, for a
// set it cannot do. scratch holds at least LanesScratchSize bytes of
// locked memory.
func DeriveLanes(ps []Params, passphrases []*secret.Key, dst [][]byte, scratch []byte) bool {
	if len(ps) != len(passphrases) || len(ps) != len(dst) || len(ps) > Lanes || len(scratch) < LanesScratchSize {
		return false
	}
	var jobs [Lanes]sha2.LaneJob
	for i, p := range ps {
		if !Laneable(p, passphrases[i].Len(), len(dst[i])) {
			return false
		}
		jobs[i] = sha2.LaneJob{Password: passphrases[i].Bytes(), Salt: p.Salt, Iterations: int(p.Iterations), Dst: dst[i]}
	}
	return sha2.PBKDF2SHA512Lanes(jobs[:len(ps)], scratch)
}
