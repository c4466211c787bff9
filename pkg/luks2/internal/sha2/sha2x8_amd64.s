//go:build amd64 && !purego

#include "textflag.h"

// block512x8AVX512 compresses eight SHA-512 blocks, one per lane, into
// eight states with AVX-512: lane l's state word w is state[w][l] and its
// message word i is msg[i][l] (already in word form, not bytes). Each
// round is the FIPS 180-4 round on eight lanes at once: the rotations by
// VPRORQ, Ch, Maj and the three-way XORs by VPTERNLOGQ (0xCA, 0xE8, 0x96),
// the round constant broadcast from k512. The state lives in Z0-Z7 (the
// names rotate from round to round instead of the values), the message
// schedule in a ring of sixteen in Z16-Z31, temporaries in Z8-Z13.

// ROUND: h += S1(e) + Ch(e,f,g) + w + k; d += h; h += S0(a) + Maj(a,b,c).
#define ROUND(a, b, c, d, e, f, g, h, w, k) \
	VPRORQ     $14, e, Z8          \
	VPRORQ     $18, e, Z9          \
	VPRORQ     $41, e, Z10         \
	VPTERNLOGQ $0x96, Z10, Z9, Z8  \
	VMOVDQA64  e, Z9               \
	VPTERNLOGQ $0xca, g, f, Z9     \
	VPADDQ     Z8, h, h            \
	VPADDQ     Z9, h, h            \
	VPADDQ     w, h, h             \
	VPADDQ.BCST k(AX), h, h        \
	VPADDQ     h, d, d             \
	VPRORQ     $28, a, Z8          \
	VPRORQ     $34, a, Z9          \
	VPRORQ     $39, a, Z10         \
	VPTERNLOGQ $0x96, Z10, Z9, Z8  \
	VMOVDQA64  a, Z9               \
	VPTERNLOGQ $0xe8, c, b, Z9     \
	VPADDQ     Z8, h, h            \
	VPADDQ     Z9, h, h

// SCHED: w16 (holding W[t-16]) becomes W[t] = s1(W[t-2]) + W[t-7] +
// s0(W[t-15]) + W[t-16].
#define SCHED(w16, w15, w7, w2) \
	VPRORQ     $1, w15, Z11        \
	VPRORQ     $8, w15, Z12        \
	VPSRLQ     $7, w15, Z13        \
	VPTERNLOGQ $0x96, Z13, Z12, Z11 \
	VPADDQ     Z11, w16, w16       \
	VPRORQ     $19, w2, Z11        \
	VPRORQ     $61, w2, Z12        \
	VPSRLQ     $6, w2, Z13         \
	VPTERNLOGQ $0x96, Z13, Z12, Z11 \
	VPADDQ     Z11, w16, w16       \
	VPADDQ     w7, w16, w16

// func block512x8AVX512(state *[8][8]uint64, msg *[16][8]uint64)
// Requires: AVX512F
TEXT ·block512x8AVX512(SB), NOSPLIT, $0-16
	MOVQ state+0(FP), DI
	MOVQ msg+8(FP), SI
	LEAQ ·k512(SB), AX

	VMOVDQU64 0(DI), Z0
	VMOVDQU64 64(DI), Z1
	VMOVDQU64 128(DI), Z2
	VMOVDQU64 192(DI), Z3
	VMOVDQU64 256(DI), Z4
	VMOVDQU64 320(DI), Z5
	VMOVDQU64 384(DI), Z6
	VMOVDQU64 448(DI), Z7
	VMOVDQU64 0(SI), Z16
	VMOVDQU64 64(SI), Z17
	VMOVDQU64 128(SI), Z18
	VMOVDQU64 192(SI), Z19
	VMOVDQU64 256(SI), Z20
	VMOVDQU64 320(SI), Z21
	VMOVDQU64 384(SI), Z22
	VMOVDQU64 448(SI), Z23
	VMOVDQU64 512(SI), Z24
	VMOVDQU64 576(SI), Z25
	VMOVDQU64 640(SI), Z26
	VMOVDQU64 704(SI), Z27
	VMOVDQU64 768(SI), Z28
	VMOVDQU64 832(SI), Z29
	VMOVDQU64 896(SI), Z30
	VMOVDQU64 960(SI), Z31

	// Rounds 0-15 on the message words as loaded.
	ROUND(Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z16, 0)
	ROUND(Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z17, 8)
	ROUND(Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z18, 16)
	ROUND(Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z19, 24)
	ROUND(Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z20, 32)
	ROUND(Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z21, 40)
	ROUND(Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z22, 48)
	ROUND(Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z23, 56)
	ROUND(Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z24, 64)
	ROUND(Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z25, 72)
	ROUND(Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z26, 80)
	ROUND(Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z27, 88)
	ROUND(Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z28, 96)
	ROUND(Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z29, 104)
	ROUND(Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z30, 112)
	ROUND(Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z31, 120)

	// Rounds 16-79, sixteen at a time: the state's names repeat every
	// eight rounds, the schedule's ring every sixteen, AX steps through
	// the round constants.
	MOVQ $4, CX

rounds:
	ADDQ $128, AX
	SCHED(Z16, Z17, Z25, Z30)
	ROUND(Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z16, 0)
	SCHED(Z17, Z18, Z26, Z31)
	ROUND(Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z17, 8)
	SCHED(Z18, Z19, Z27, Z16)
	ROUND(Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z18, 16)
	SCHED(Z19, Z20, Z28, Z17)
	ROUND(Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z19, 24)
	SCHED(Z20, Z21, Z29, Z18)
	ROUND(Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z20, 32)
	SCHED(Z21, Z22, Z30, Z19)
	ROUND(Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z21, 40)
	SCHED(Z22, Z23, Z31, Z20)
	ROUND(Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z22, 48)
	SCHED(Z23, Z24, Z16, Z21)
	ROUND(Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z23, 56)
	SCHED(Z24, Z25, Z17, Z22)
	ROUND(Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z24, 64)
	SCHED(Z25, Z26, Z18, Z23)
	ROUND(Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z25, 72)
	SCHED(Z26, Z27, Z19, Z24)
	ROUND(Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z26, 80)
	SCHED(Z27, Z28, Z20, Z25)
	ROUND(Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z27, 88)
	SCHED(Z28, Z29, Z21, Z26)
	ROUND(Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z28, 96)
	SCHED(Z29, Z30, Z22, Z27)
	ROUND(Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z29, 104)
	SCHED(Z30, Z31, Z23, Z28)
	ROUND(Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z30, 112)
	SCHED(Z31, Z16, Z24, Z29)
	ROUND(Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z31, 120)
	DECQ CX
	JNZ  rounds

	VPADDQ 0(DI), Z0, Z0
	VMOVDQU64 Z0, 0(DI)
	VPADDQ 64(DI), Z1, Z1
	VMOVDQU64 Z1, 64(DI)
	VPADDQ 128(DI), Z2, Z2
	VMOVDQU64 Z2, 128(DI)
	VPADDQ 192(DI), Z3, Z3
	VMOVDQU64 Z3, 192(DI)
	VPADDQ 256(DI), Z4, Z4
	VMOVDQU64 Z4, 256(DI)
	VPADDQ 320(DI), Z5, Z5
	VMOVDQU64 Z5, 320(DI)
	VPADDQ 384(DI), Z6, Z6
	VMOVDQU64 Z6, 384(DI)
	VPADDQ 448(DI), Z7, Z7
	VMOVDQU64 Z7, 448(DI)
	VZEROUPPER
	RET
