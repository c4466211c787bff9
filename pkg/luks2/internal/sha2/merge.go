package sha2

import (
	"cmp"
	"encoding/binary"
	"slices"
	"unsafe"
)

// MergeLanes is how many keys MergeSHA256Lanes merges at once: eight
// 64-byte keys are sixteen 32-byte pieces, one per 32-bit lane of an
// AVX-512 register.
const MergeLanes = 8

// MergeKeySize is the one key size MergeSHA256Lanes merges: a 512-bit
// AES-XTS key, every atrest volume's and systemd-cryptenroll's default.
const MergeKeySize = 64

// MergeJob is one key of MergeSHA256Lanes: Dst (MergeKeySize bytes) gets
// the key the split material Src (at least MergeKeySize*stripes bytes)
// hides.
type MergeJob struct {
	Src, Dst []byte
}

// MergeScratchSize is the scratch MergeSHA256Lanes needs: the running
// blocks of every lane.
const MergeScratchSize = align + int(unsafe.Sizeof([8][16]uint32{}))

// CanMergeLanes reports whether MergeSHA256Lanes runs here: it needs
// AVX-512 (F and BW). Where it does not, each key is merged alone
// (Diffuser), which is as fast per key as this is for eight on SHA-NI's
// two lanes; this runs the sixteen compressions of a stripe of eight
// keys in one instruction sequence (BenchmarkMergeSHA256Lanes against
// BenchmarkDiffuse64).
func CanMergeLanes() bool { return haveAVX512BW }

// MergeSHA256Lanes runs the anti-forensic merge (cryptsetup's AF_merge)
// with SHA-256 of up to MergeLanes keys of MergeKeySize bytes at once,
// each over stripes stripes, and reports true; it reports false without
// touching anything where it cannot run (CanMergeLanes), for more than
// MergeLanes jobs or none, or for a job it cannot do (a Dst not
// MergeKeySize bytes, a Src shorter than MergeKeySize*stripes bytes, no
// stripes). scratch holds at least MergeScratchSize bytes of locked
// memory; it is cleared on return.
func MergeSHA256Lanes(jobs []MergeJob, stripes int, scratch []byte) bool {
	if !haveAVX512BW || len(jobs) == 0 || len(jobs) > MergeLanes || stripes < 1 || len(scratch) < MergeScratchSize {
		return false
	}
	for _, j := range jobs {
		if len(j.Dst) != MergeKeySize || len(j.Src) < MergeKeySize*stripes {
			return false
		}
	}
	off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(scratch))) & (align - 1))
	w := scratch[off : MergeScratchSize-align+off]
	defer clear(w)
	d := (*[8][16]uint32)(unsafe.Pointer(unsafe.SliceData(w)))
	clear(w) // the block starts as zeros
	// Lanes without a job merge the first job's material again; their
	// result is dropped.
	var srcs [MergeLanes]*byte
	for l := range srcs {
		srcs[l] = unsafe.SliceData(jobs[min(l, len(jobs)-1)].Src)
	}
	if stripes > 1 {
		merge256x16(d, &srcs, stripes-1, &mergeTable)
	}
	// The last stripe is XORed in without diffusion.
	last := (stripes - 1) * MergeKeySize
	for l, j := range jobs {
		for p := range 2 {
			for k := range 8 {
				at := 32*p + 4*k
				v := d[k][2*l+p] ^ binary.BigEndian.Uint32(j.Src[last+at:])
				binary.BigEndian.PutUint32(j.Dst[at:], v)
			}
		}
	}
	return true
}

// mergeTable is the constant data of merge256x16AVX512 (merge_amd64.s):
// the transposition's 24 index vectors, the byte swap's shuffle, each
// lane's piece number, the padding words of a 36-byte message and
// SHA-256's initial state.
var mergeTable = newMergeTable()

// piece names one 32-bit word of a stripe: word k of piece p of key l.
type piece struct{ l, p, k int }

// newMergeTable computes the transposition's index vectors by following
// its three rounds of VPERMI2D register by register (merge_amd64.s): each
// output register holds the sixteen words of its two inputs that it
// wants, in a fixed order; the last round's order is lane 2l+p.
func newMergeTable() (t [29][16]uint32) {
	var reg [32][16]piece
	for l := range 8 {
		for e := range 16 {
			reg[l][e] = piece{l, e / 8, e % 8}
		}
	}
	type perm struct {
		a, b, out int
		keep      func(piece) bool
	}
	words := func(lo, hi int) func(piece) bool {
		return func(x piece) bool { return x.k >= lo && x.k <= hi }
	}
	rounds := [][]perm{{
		{0, 1, 16, words(0, 3)}, {0, 1, 17, words(4, 7)},
		{2, 3, 18, words(0, 3)}, {2, 3, 19, words(4, 7)},
		{4, 5, 20, words(0, 3)}, {4, 5, 21, words(4, 7)},
		{6, 7, 22, words(0, 3)}, {6, 7, 23, words(4, 7)},
	}, {
		{16, 18, 0, words(0, 1)}, {16, 18, 1, words(2, 3)},
		{20, 22, 2, words(0, 1)}, {20, 22, 3, words(2, 3)},
		{17, 19, 4, words(4, 5)}, {17, 19, 5, words(6, 7)},
		{21, 23, 6, words(4, 5)}, {21, 23, 7, words(6, 7)},
	}, {
		{0, 2, 17, words(0, 0)}, {0, 2, 18, words(1, 1)},
		{1, 3, 19, words(2, 2)}, {1, 3, 20, words(3, 3)},
		{4, 6, 21, words(4, 4)}, {4, 6, 22, words(5, 5)},
		{5, 7, 23, words(6, 6)}, {5, 7, 24, words(7, 7)},
	}}
	i := 0
	for _, round := range rounds {
		next := reg
		for _, pm := range round {
			var pick []piece
			for _, x := range append(reg[pm.a][:], reg[pm.b][:]...) {
				if pm.keep(x) {
					pick = append(pick, x)
				}
			}
			if len(pick) != 16 {
				panic("sha2: merge transposition picks the wrong words")
			}
			slices.SortFunc(pick, func(x, y piece) int {
				return cmp.Or(cmp.Compare(x.k, y.k), cmp.Compare(x.l, y.l), cmp.Compare(x.p, y.p))
			})
			for e, x := range pick {
				if at := slices.Index(reg[pm.a][:], x); at >= 0 {
					t[i][e] = uint32(at)
				} else {
					t[i][e] = 16 + uint32(slices.Index(reg[pm.b][:], x))
				}
			}
			copy(next[pm.out][:], pick)
			i++
		}
		reg = next
	}
	for k := range 8 {
		for lane, x := range reg[17+k] {
			if x != (piece{lane / 2, lane % 2, k}) {
				panic("sha2: merge transposition leaves a word out of place")
			}
		}
	}
	for e := range 16 {
		b := uint32(e % 4 * 4)                            // VPSHUFB indexes bytes within each 128-bit lane
		t[24][e] = (b + 3) | (b+2)<<8 | (b+1)<<16 | b<<24 // bytes of each word reversed
		t[25][e] = uint32(e % 2)
		t[26][e] = 0x80000000
		t[27][e] = 36 * 8
	}
	copy(t[28][:8], sha256Alg.iv[:])
	return t
}
