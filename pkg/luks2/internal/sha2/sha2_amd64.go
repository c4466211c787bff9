//go:build amd64 && !purego

package sha2

import "golang.org/x/sys/cpu"

var (
	haveSHANI = cpu.X86.HasAVX && hasSHA() && cpu.X86.HasSSE41 && cpu.X86.HasSSSE3
	haveAVX2  = cpu.X86.HasAVX && cpu.X86.HasAVX2 && cpu.X86.HasBMI2
	// haveAVX512: x/sys/cpu also checks that the OS saves the ZMM state.
	haveAVX512 = cpu.X86.HasAVX512F
)

// hasSHA reports the SHA extensions (CPUID leaf 7, EBX bit 29), which this
// version of x/sys/cpu does not name.
func hasSHA() bool {
	if max, _, _, _ := cpuid(0, 0); max < 7 {
		return false
	}
	_, ebx, _, _ := cpuid(7, 0)
	return ebx&(1<<29) != 0
}

//go:noescape
func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

// block256SHANI compresses the 64-byte blocks of p into dig with SHA-NI.
//
//go:noescape
func block256SHANI(dig *[8]uint32, p []byte)

// block512AVX2 compresses the 128-byte blocks of p into dig with AVX2.
//
//go:noescape
func block512AVX2(dig *[8]uint64, p []byte)

// block256SHANIx2 compresses one 64-byte block at pa into a and one at pb
// into b, the two interleaved.
//
//go:noescape
func block256SHANIx2(a, b *[8]uint32, pa, pb *byte)

func block256x2(a, b *[8]uint32, pa, pb []byte) {
	if haveSHANI {
		block256SHANIx2(a, b, &pa[:64][0], &pb[:64][0])
	} else {
		block256Generic(a, pa[:64])
		block256Generic(b, pb[:64])
	}
}

func block256(dig *[8]uint32, p []byte) {
	if haveSHANI {
		block256SHANI(dig, p)
	} else {
		block256Generic(dig, p)
	}
}

func block512(dig *[8]uint64, p []byte) {
	if haveAVX2 {
		block512AVX2(dig, p)
	} else {
		block512Generic(dig, p)
	}
}

// block512x8AVX512 compresses one block per lane into eight SHA-512
// states (laneState's layout) with AVX-512.
//
//go:noescape
func block512x8AVX512(state *[8][8]uint64, msg *[16][8]uint64)

// block512x4AVX2 compresses one block per lane into four SHA-512 states
// with AVX2: the four lanes of laneState's layout that state and msg
// point at (&s[0][0] or &s[0][4]).
//
//go:noescape
func block512x4AVX2(state *uint64, msg *uint64)

func block512x8(state *[8][8]uint64, msg *[16][8]uint64, l *laneState, n int) {
	switch {
	case haveAVX512:
		block512x8AVX512(state, msg)
	case haveAVX2:
		block512x4AVX2(&state[0][0], &msg[0][0])
		if n > 4 {
			block512x4AVX2(&state[0][4], &msg[0][4])
		}
	default:
		block512x8Lanes(state, msg, l, n)
	}
}

var haveAVX512BW = haveAVX512 && cpu.X86.HasAVX512BW

// merge256x16AVX512 runs n stripes of eight keys' anti-forensic merge in
// sixteen SHA-256 lanes (MergeSHA256Lanes).
//
//go:noescape
func merge256x16AVX512(d *[8][16]uint32, srcs *[MergeLanes]*byte, n int, tab *[29][16]uint32)

func merge256x16(d *[8][16]uint32, srcs *[MergeLanes]*byte, n int, tab *[29][16]uint32) {
	merge256x16AVX512(d, srcs, n, tab)
}
