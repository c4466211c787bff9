package sha2

import (
	"encoding/binary"
	"unsafe"
)

// Lanes is how many PBKDF2-HMAC-SHA512 derivations PBKDF2SHA512Lanes
// runs at once.
const Lanes = 8

// LaneWidth is how many lanes one SIMD compression of PBKDF2SHA512Lanes
// holds: 8 with AVX-512, 4 with AVX2 (eight lanes are two compressions),
// 0 where its lanes run one after the other. A compression costs the
// same however many of its lanes are in use: a group of up to LaneWidth
// derivations costs about what two do one at a time
// (BenchmarkPBKDF2SHA512Lanes/N against BenchmarkPBKDF2SHA512).
func LaneWidth() int {
	switch {
	case haveAVX512:
		return 8
	case haveAVX2:
		return 4
	}
	return 0
}

// LaneJob is one derivation of PBKDF2SHA512Lanes: Dst (1 to 64 bytes, one
// SHA-512 block of output) gets PBKDF2-HMAC-SHA512(Password, Salt,
// Iterations).
type LaneJob struct {
	Password, Salt []byte
	Iterations     int
	Dst            []byte
}

// laneState is the working set of PBKDF2SHA512Lanes, in the caller's
// locked scratch: lane l's state word w is [w][l], its message word i
// msg[i][l]. one and blk hold one lane's state and block where there is
// no eight-lane compression.
type laneState struct {
	istate, ostate, st, t [8][8]uint64
	msg                   [16][8]uint64
	one                   [8]uint64
	blk                   [chunk512]byte
}

// LanesScratchSize is the scratch PBKDF2SHA512Lanes needs.
const LanesScratchSize = align + int(unsafe.Sizeof(laneState{})) + ScratchSize

// PBKDF2SHA512Lanes computes up to Lanes derivations at once: the 999
// iterations after the first of each run as one eight-lane compression
// per hash (AVX-512 where the CPU has it, two four-lane ones on AVX2;
// otherwise one lane after the other, as PBKDF2 would). It reports false without touching anything
// for more than Lanes jobs, none, or a job this cannot do (a Dst empty or
// longer than 64 bytes, a password longer than 128 bytes, no
// iterations). scratch holds at least LanesScratchSize bytes of locked
// memory; it is cleared on return.
func PBKDF2SHA512Lanes(jobs []LaneJob, scratch []byte) bool {
	if len(jobs) == 0 || len(jobs) > Lanes {
		return false
	}
	for _, j := range jobs {
		if len(j.Dst) == 0 || len(j.Dst) > 64 || len(j.Password) > chunk512 || j.Iterations < 1 {
			return false
		}
	}
	off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(scratch))) & (align - 1))
	w := scratch[off : LanesScratchSize-align+off]
	defer clear(w)
	l := (*laneState)(unsafe.Pointer(unsafe.SliceData(w)))
	single := w[unsafe.Sizeof(laneState{}):]
	a := sha512Alg
	sw := aligned(single)
	is, ost, st := state[uint64](sw[0:]), state[uint64](sw[64:]), state[uint64](sw[128:])
	ibuf, obuf := sw[192:192+chunk512], sw[192+chunk512:192+2*chunk512]
	most := 0
	for i, j := range jobs {
		a.hmacKey(j.Password, is, ost, ibuf, obuf)
		a.firstU(is, ost, st, j.Salt, 1, ibuf, obuf)
		for k := range 8 {
			l.istate[k][i], l.ostate[k][i] = is[k], ost[k]
			l.msg[k][i], l.t[k][i] = st[k], st[k]
		}
		most = max(most, j.Iterations)
	}
	// Every later U is one block: the previous U and the padding of a
	// 64-byte message after a block of key, the same in every lane.
	for i := range Lanes {
		l.msg[8][i], l.msg[15][i] = 1<<63, (chunk512+64)*8
	}
	n := len(jobs)
	for it := 2; it <= most; it++ {
		l.st = l.istate
		block512x8(&l.st, &l.msg, l, n)
		copy(l.msg[:8], l.st[:])
		l.st = l.ostate
		block512x8(&l.st, &l.msg, l, n)
		copy(l.msg[:8], l.st[:])
		for i, j := range jobs {
			if it <= j.Iterations {
				for k := range 8 {
					l.t[k][i] ^= l.st[k][i]
				}
			}
		}
	}
	for i, j := range jobs {
		for k := range 8 {
			binary.BigEndian.PutUint64(l.blk[8*k:], l.t[k][i])
		}
		copy(j.Dst, l.blk[:64])
	}
	return true
}

// block512x8Lanes compresses the first n lanes' blocks one after the
// other, where there is no eight-lane compression, in l's one and blk.
func block512x8Lanes(state *[8][8]uint64, msg *[16][8]uint64, l *laneState, n int) {
	for i := range n {
		for k := range 8 {
			l.one[k] = state[k][i]
		}
		for k := range 16 {
			binary.BigEndian.PutUint64(l.blk[8*k:], msg[k][i])
		}
		block512(&l.one, l.blk[:])
		for k := range 8 {
			state[k][i] = l.one[k]
		}
	}
}
