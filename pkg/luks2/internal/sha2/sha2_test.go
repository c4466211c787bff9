package sha2

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"hash"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// both runs f on the assembly (where there is some; AVX2 alone as well
// where AVX-512 would hide it) and on the generic code.
func both(t *testing.T, f func(t *testing.T)) {
	t.Run("asm", f)
	s, a, z := haveSHANI, haveAVX2, haveAVX512
	defer func() { haveSHANI, haveAVX2, haveAVX512 = s, a, z }()
	if z && a {
		haveAVX512 = false
		t.Run("avx2", f)
	}
	haveSHANI, haveAVX2, haveAVX512 = false, false, false
	t.Run("generic", f)
}

var hashes = []struct {
	name string
	new  func() hash.Hash
}{{"sha256", sha256.New}, {"sha512", sha512.New}}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestPBKDF2MatchesStandard compares PBKDF2 with crypto/pbkdf2 for salts
// and passwords around every block boundary, output lengths of one to
// several blocks, and 1, 2 and 1000 iterations, at every scratch alignment.
func TestPBKDF2MatchesStandard(t *testing.T) {
	both(t, func(t *testing.T) {
		for _, h := range hashes {
			bs := h.new().BlockSize()
			for _, pl := range []int{0, 1, 32, bs - 1, bs} {
				for _, sl := range []int{0, 16, 32, bs - 13, bs - 12, bs - 4, bs, bs + 1, 300} {
					for _, it := range []int{1, 2, 1000} {
						for _, dl := range []int{1, 32, 64, 65, 200} {
							pw, salt := random(t, pl), random(t, sl)
							want, err := pbkdf2.Key(h.new, string(pw), salt, it, dl)
							if err != nil {
								t.Fatal(err)
							}
							scratch := make([]byte, ScratchSize+sl%64)
							got := make([]byte, dl)
							if !PBKDF2(h.name, pw, salt, it, got, scratch[sl%64:]) {
								t.Fatalf("%s: not handled", h.name)
							}
							if !bytes.Equal(got, want) {
								t.Fatalf("%s password %d salt %d iterations %d length %d: got %x, want %x", h.name, pl, sl, it, dl, got, want)
							}
							if !bytes.Equal(scratch, make([]byte, len(scratch))) {
								t.Fatalf("%s: scratch not cleared", h.name)
							}
						}
					}
				}
			}
		}
	})
}

// TestPBKDF2PairMatchesStandard compares each of PBKDF2Pair's two
// results with crypto/pbkdf2, for passwords and salts of different
// lengths in the two chains, outputs of one byte to one digest, and 1, 2
// and 1000 iterations, at every scratch alignment.
func TestPBKDF2PairMatchesStandard(t *testing.T) {
	both(t, func(t *testing.T) {
		for _, h := range hashes {
			bs, size := h.new().BlockSize(), h.new().Size()
			for _, pl := range [][2]int{{64, 64}, {0, bs}, {bs - 1, 1}} {
				for _, sl := range [][2]int{{32, 32}, {0, bs + 1}, {bs - 12, 300}} {
					for _, it := range []int{1, 2, 1000} {
						for _, dl := range [][2]int{{size, size}, {20, size}, {1, 20}} {
							var pw, salt, want, got [2][]byte
							for j := range 2 {
								pw[j], salt[j] = random(t, pl[j]), random(t, sl[j])
								w, err := pbkdf2.Key(h.new, string(pw[j]), salt[j], it, dl[j])
								if err != nil {
									t.Fatal(err)
								}
								want[j], got[j] = w, make([]byte, dl[j])
							}
							off := (sl[1] + pl[0]) % 64
							scratch := make([]byte, PairScratchSize+off)
							if !PBKDF2Pair(h.name, pw, salt, it, got, scratch[off:]) {
								t.Fatalf("%s: not handled", h.name)
							}
							for j := range 2 {
								if !bytes.Equal(got[j], want[j]) {
									t.Fatalf("%s chain %d: password %d salt %d iterations %d length %d: got %x, want %x", h.name, j, pl[j], sl[j], it, dl[j], got[j], want[j])
								}
							}
							if !bytes.Equal(scratch, make([]byte, len(scratch))) {
								t.Fatalf("%s: scratch not cleared", h.name)
							}
						}
					}
				}
			}
		}
	})
}

// TestPBKDF2PairDeclines: what PBKDF2Pair cannot do, it leaves to the
// caller with dst untouched.
func TestPBKDF2PairDeclines(t *testing.T) {
	key, salt := make([]byte, 64), make([]byte, 32)
	for name, c := range map[string]struct {
		hash     string
		password [2][]byte
		dst      [2][]byte
		scratch  int
	}{
		"sha1":               {"sha1", [2][]byte{key, key}, [2][]byte{make([]byte, 20), make([]byte, 20)}, PairScratchSize},
		"long password":      {"sha256", [2][]byte{key, make([]byte, 65)}, [2][]byte{make([]byte, 32), make([]byte, 32)}, PairScratchSize},
		"output of 2 blocks": {"sha256", [2][]byte{key, key}, [2][]byte{make([]byte, 32), make([]byte, 33)}, PairScratchSize},
		"empty output":       {"sha256", [2][]byte{key, key}, [2][]byte{nil, make([]byte, 32)}, PairScratchSize},
		"short scratch":      {"sha256", [2][]byte{key, key}, [2][]byte{make([]byte, 32), make([]byte, 32)}, PairScratchSize - 1},
	} {
		for j := range 2 {
			for i := range c.dst[j] {
				c.dst[j][i] = 0xa5
			}
		}
		if PBKDF2Pair(c.hash, c.password, [2][]byte{salt, salt}, 1000, c.dst, make([]byte, c.scratch)) {
			t.Errorf("%s: handled", name)
		}
		for j := range 2 {
			if !bytes.Equal(c.dst[j], bytes.Repeat([]byte{0xa5}, len(c.dst[j]))) {
				t.Errorf("%s: dst %d written", name, j)
			}
		}
	}
}

func TestPBKDF2Declines(t *testing.T) {
	scratch := make([]byte, ScratchSize)
	if PBKDF2("sha1", nil, nil, 1, make([]byte, 20), scratch) {
		t.Fatal("sha1 handled")
	}
	if PBKDF2("sha256", make([]byte, 65), nil, 1, make([]byte, 32), scratch) {
		t.Fatal("a password longer than the block handled")
	}
	if Diffuser("sha384", scratch) != nil {
		t.Fatal("sha384 diffuser")
	}
}

// TestDiffuserMatchesHash compares the diffusion with cryptsetup's
// definition through hash.Hash, for key sizes with and without a short
// last piece.
func TestDiffuserMatchesHash(t *testing.T) {
	both(t, func(t *testing.T) {
		for _, h := range hashes {
			for _, n := range []int{16, 32, 48, 64, 100, 128} {
				t.Run(fmt.Sprint(h.name, "/", n), func(t *testing.T) {
					block := random(t, n)
					want := reference(h.new, block)
					d := Diffuser(h.name, make([]byte, ScratchSize))
					d(block)
					if !bytes.Equal(block, want) {
						t.Fatalf("got %x, want %x", block, want)
					}
					// The same diffuser again, as in a merge's rounds, and
					// on a block of another length in between.
					for _, m := range []int{n, 20, n} {
						block := random(t, m)
						want := reference(h.new, block)
						d(block)
						if !bytes.Equal(block, want) {
							t.Fatalf("round on %d bytes: got %x, want %x", m, block, want)
						}
					}
				})
			}
		}
	})
}

// reference is cryptsetup's diffusion of block through hash.Hash.
func reference(newHash func() hash.Hash, block []byte) []byte {
	out := bytes.Clone(block)
	size := newHash().Size()
	for i := 0; i*size < len(out); i++ {
		piece := out[i*size : min((i+1)*size, len(out))]
		d := newHash()
		d.Write(binary.BigEndian.AppendUint32(nil, uint32(i)))
		d.Write(piece)
		copy(piece, d.Sum(nil))
	}
	return out
}

// BenchmarkDiffuse64 is one AF round of a 64-byte key with SHA-256 (the
// merge runs 3999 of them).
func BenchmarkDiffuse64(b *testing.B) {
	block := make([]byte, 64)
	d := Diffuser("sha256", make([]byte, ScratchSize))
	defer cpuPerOp(b)()
	for range b.N {
		d(block)
	}
}

// BenchmarkPBKDF2SHA512 is the platform keyslot's KDF: 1000 iterations,
// a 64-byte key.
func BenchmarkPBKDF2SHA512(b *testing.B) {
	dst, scratch, salt := make([]byte, 64), make([]byte, ScratchSize), make([]byte, 32)
	defer cpuPerOp(b)()
	for range b.N {
		PBKDF2("sha512", salt, salt, 1000, dst, scratch)
	}
}

// BenchmarkPBKDF2SHA256 is a volume key's digest: 1000 iterations, a
// 64-byte key; BenchmarkPBKDF2SHA256Pair is two of them at once (cpu-ns/op
// is per pair).
func BenchmarkPBKDF2SHA256(b *testing.B) {
	dst, scratch, key := make([]byte, 32), make([]byte, ScratchSize), make([]byte, 64)
	defer cpuPerOp(b)()
	for range b.N {
		PBKDF2("sha256", key, key[:32], 1000, dst, scratch)
	}
}

func BenchmarkPBKDF2SHA256Pair(b *testing.B) {
	dst, scratch, key := [2][]byte{make([]byte, 32), make([]byte, 32)}, make([]byte, PairScratchSize), make([]byte, 64)
	defer cpuPerOp(b)()
	for range b.N {
		PBKDF2Pair("sha256", [2][]byte{key, key[1:]}, [2][]byte{key[:32], key[32:]}, 1000, dst, scratch)
	}
}

// cpuPerOp reports the process's CPU time (user+system) per iteration as
// cpu-ns/op when the returned function runs: on a machine shared with other
// work, wall time measures the load.
func cpuPerOp(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru unix.Rusage
		_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	b.ResetTimer()
	return func() { b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op") }
}
