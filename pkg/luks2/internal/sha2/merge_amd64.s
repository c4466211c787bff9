//go:build amd64 && !purego

#include "textflag.h"

// merge256x16AVX512 runs the anti-forensic merge of eight 64-byte keys
// with SHA-256 (cryptsetup's AF_merge) in sixteen lanes, one per 32-byte
// piece of a key: lane 2l+p is piece p of key l. For each of n stripes it
// XORs stripe s of every key's split material into the running block d
// and diffuses it, each piece becoming SHA-256(be32(p) || piece): one
// sixteen-lane compression of messages that are one block each.
//
// Lane l's block word w is d[w][2l+p] (in word form, not bytes). The
// stripes arrive as bytes, key by key: eight loads, a byte swap and a
// transposition by three rounds of VPERMI2D (the index vectors are
// mergeTable's) put word w of every piece into one register.
//
// The compression is block512x8AVX512's on 32-bit lanes: the rotations
// by VPRORD, Ch, Maj and the three-way XORs by VPTERNLOGD, the round
// constant broadcast from k256. The state lives in Z0-Z7 (the names
// rotate from round to round instead of the values), the message
// schedule in a ring of sixteen in Z16-Z31, temporaries in Z8-Z13, the
// byte swap's shuffle in Z14.

// ROUND: h += S1(e) + Ch(e,f,g) + w + k; d += h; h += S0(a) + Maj(a,b,c).
#define ROUND(a, b, c, d, e, f, g, h, w, k) \
	VPRORD     $6, e, Z8           \
	VPRORD     $11, e, Z9          \
	VPRORD     $25, e, Z10         \
	VPTERNLOGD $0x96, Z10, Z9, Z8  \
	VMOVDQA32  e, Z9               \
	VPTERNLOGD $0xca, g, f, Z9     \
	VPADDD     Z8, h, h            \
	VPADDD     Z9, h, h            \
	VPADDD     w, h, h             \
	VPADDD.BCST k(AX), h, h        \
	VPADDD     h, d, d             \
	VPRORD     $2, a, Z8           \
	VPRORD     $13, a, Z9          \
	VPRORD     $22, a, Z10         \
	VPTERNLOGD $0x96, Z10, Z9, Z8  \
	VMOVDQA32  a, Z9               \
	VPTERNLOGD $0xe8, c, b, Z9     \
	VPADDD     Z8, h, h            \
	VPADDD     Z9, h, h

// SCHED: w16 (holding W[t-16]) becomes W[t] = s1(W[t-2]) + W[t-7] +
// s0(W[t-15]) + W[t-16].
#define SCHED(w16, w15, w7, w2) \
	VPRORD     $7, w15, Z11        \
	VPRORD     $18, w15, Z12       \
	VPSRLD     $3, w15, Z13        \
	VPTERNLOGD $0x96, Z13, Z12, Z11 \
	VPADDD     Z11, w16, w16       \
	VPRORD     $17, w2, Z11        \
	VPRORD     $19, w2, Z12        \
	VPSRLD     $10, w2, Z13        \
	VPTERNLOGD $0x96, Z13, Z12, Z11 \
	VPADDD     Z11, w16, w16       \
	VPADDD     w7, w16, w16

// Offsets into mergeTable (merge.go): 24 index vectors, then the byte
// swap's shuffle, the lanes' piece numbers (message word 0), the padding
// words 9 and 15, and SHA-256's initial state.
#define TAB_BSWAP (24*64)
#define TAB_W0 (25*64)
#define TAB_W9 (26*64)
#define TAB_W15 (27*64)
#define TAB_IV (28*64)

// PERM: out = the sixteen words of a:b that index vector i of the table
// picks.
#define PERM(i, a, b, out) \
	VMOVDQU32 (i*64)(R9), out \
	VPERMI2D  b, a, out

// func merge256x16AVX512(d *[8][16]uint32, srcs *[8]*byte, n int, tab *[29][16]uint32)
// Requires: AVX512F, AVX512BW
TEXT ·merge256x16AVX512(SB), NOSPLIT, $0-32
	MOVQ d+0(FP), DI
	MOVQ srcs+8(FP), SI
	MOVQ n+16(FP), BX
	MOVQ tab+24(FP), R9
	XORQ DX, DX
	VMOVDQU32 TAB_BSWAP(R9), Z14

stripe:
	// Stripe DX/64 of each key, its words in host order.
	MOVQ 0(SI), R8
	VMOVDQU32 (R8)(DX*1), Z0
	VPSHUFB Z14, Z0, Z0
	MOVQ 8(SI), R8
	VMOVDQU32 (R8)(DX*1), Z1
	VPSHUFB Z14, Z1, Z1
	MOVQ 16(SI), R8
	VMOVDQU32 (R8)(DX*1), Z2
	VPSHUFB Z14, Z2, Z2
	MOVQ 24(SI), R8
	VMOVDQU32 (R8)(DX*1), Z3
	VPSHUFB Z14, Z3, Z3
	MOVQ 32(SI), R8
	VMOVDQU32 (R8)(DX*1), Z4
	VPSHUFB Z14, Z4, Z4
	MOVQ 40(SI), R8
	VMOVDQU32 (R8)(DX*1), Z5
	VPSHUFB Z14, Z5, Z5
	MOVQ 48(SI), R8
	VMOVDQU32 (R8)(DX*1), Z6
	VPSHUFB Z14, Z6, Z6
	MOVQ 56(SI), R8
	VMOVDQU32 (R8)(DX*1), Z7
	VPSHUFB Z14, Z7, Z7

	// Transposition: Z16-Z23 hold words 0-3 and 4-7 of keys 0-1, 2-3,
	// 4-5, 6-7; Z0-Z7 words 0-1, 2-3 of keys 0-3, of keys 4-7, then 4-5,
	// 6-7 of keys 0-3, of keys 4-7; Z17-Z24 word w of every lane, XORed
	// into the block: message words 1-8.
	PERM(0, Z0, Z1, Z16)
	PERM(1, Z0, Z1, Z17)
	PERM(2, Z2, Z3, Z18)
	PERM(3, Z2, Z3, Z19)
	PERM(4, Z4, Z5, Z20)
	PERM(5, Z4, Z5, Z21)
	PERM(6, Z6, Z7, Z22)
	PERM(7, Z6, Z7, Z23)
	PERM(8, Z16, Z18, Z0)
	PERM(9, Z16, Z18, Z1)
	PERM(10, Z20, Z22, Z2)
	PERM(11, Z20, Z22, Z3)
	PERM(12, Z17, Z19, Z4)
	PERM(13, Z17, Z19, Z5)
	PERM(14, Z21, Z23, Z6)
	PERM(15, Z21, Z23, Z7)
	PERM(16, Z0, Z2, Z17)
	PERM(17, Z0, Z2, Z18)
	PERM(18, Z1, Z3, Z19)
	PERM(19, Z1, Z3, Z20)
	PERM(20, Z4, Z6, Z21)
	PERM(21, Z4, Z6, Z22)
	PERM(22, Z5, Z7, Z23)
	PERM(23, Z5, Z7, Z24)
	VPXORD 0(DI), Z17, Z17
	VPXORD 64(DI), Z18, Z18
	VPXORD 128(DI), Z19, Z19
	VPXORD 192(DI), Z20, Z20
	VPXORD 256(DI), Z21, Z21
	VPXORD 320(DI), Z22, Z22
	VPXORD 384(DI), Z23, Z23
	VPXORD 448(DI), Z24, Z24

	// Word 0 is the piece's number, 9 and 15 the padding of a 36-byte
	// message, 10-14 zero.
	VMOVDQU32 TAB_W0(R9), Z16
	VMOVDQU32 TAB_W9(R9), Z25
	VPXORD    Z26, Z26, Z26
	VPXORD    Z27, Z27, Z27
	VPXORD    Z28, Z28, Z28
	VPXORD    Z29, Z29, Z29
	VPXORD    Z30, Z30, Z30
	VMOVDQU32 TAB_W15(R9), Z31
	VPBROADCASTD (TAB_IV+0)(R9), Z0
	VPBROADCASTD (TAB_IV+4)(R9), Z1
	VPBROADCASTD (TAB_IV+8)(R9), Z2
	VPBROADCASTD (TAB_IV+12)(R9), Z3
	VPBROADCASTD (TAB_IV+16)(R9), Z4
	VPBROADCASTD (TAB_IV+20)(R9), Z5
	VPBROADCASTD (TAB_IV+24)(R9), Z6
	VPBROADCASTD (TAB_IV+28)(R9), Z7
	LEAQ ·k256(SB), AX

	// Rounds 0-15 on the message words as loaded.
	ROUND(Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z16, 0)
	ROUND(Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z17, 4)
	ROUND(Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z18, 8)
	ROUND(Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z19, 12)
	ROUND(Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z20, 16)
	ROUND(Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z21, 20)
	ROUND(Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z22, 24)
	ROUND(Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z23, 28)
	ROUND(Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z24, 32)
	ROUND(Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z25, 36)
	ROUND(Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z26, 40)
	ROUND(Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z27, 44)
	ROUND(Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z28, 48)
	ROUND(Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z29, 52)
	ROUND(Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z30, 56)
	ROUND(Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z31, 60)

	// Rounds 16-63, sixteen at a time: the state's names repeat every
	// eight rounds, the schedule's ring every sixteen, AX steps through
	// the round constants.
	MOVQ $3, CX

rounds:
	ADDQ $64, AX
	SCHED(Z16, Z17, Z25, Z30)
	ROUND(Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z16, 0)
	SCHED(Z17, Z18, Z26, Z31)
	ROUND(Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z17, 4)
	SCHED(Z18, Z19, Z27, Z16)
	ROUND(Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z18, 8)
	SCHED(Z19, Z20, Z28, Z17)
	ROUND(Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z19, 12)
	SCHED(Z20, Z21, Z29, Z18)
	ROUND(Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z20, 16)
	SCHED(Z21, Z22, Z30, Z19)
	ROUND(Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z21, 20)
	SCHED(Z22, Z23, Z31, Z20)
	ROUND(Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z22, 24)
	SCHED(Z23, Z24, Z16, Z21)
	ROUND(Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z23, 28)
	SCHED(Z24, Z25, Z17, Z22)
	ROUND(Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z24, 32)
	SCHED(Z25, Z26, Z18, Z23)
	ROUND(Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z25, 36)
	SCHED(Z26, Z27, Z19, Z24)
	ROUND(Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z5, Z26, 40)
	SCHED(Z27, Z28, Z20, Z25)
	ROUND(Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z4, Z27, 44)
	SCHED(Z28, Z29, Z21, Z26)
	ROUND(Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z3, Z28, 48)
	SCHED(Z29, Z30, Z22, Z27)
	ROUND(Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z2, Z29, 52)
	SCHED(Z30, Z31, Z23, Z28)
	ROUND(Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z1, Z30, 56)
	SCHED(Z31, Z16, Z24, Z29)
	ROUND(Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z0, Z31, 60)
	DECQ CX
	JNZ  rounds

	// The digests are the new block.
	VPADDD.BCST (TAB_IV+0)(R9), Z0, Z0
	VMOVDQU32 Z0, 0(DI)
	VPADDD.BCST (TAB_IV+4)(R9), Z1, Z1
	VMOVDQU32 Z1, 64(DI)
	VPADDD.BCST (TAB_IV+8)(R9), Z2, Z2
	VMOVDQU32 Z2, 128(DI)
	VPADDD.BCST (TAB_IV+12)(R9), Z3, Z3
	VMOVDQU32 Z3, 192(DI)
	VPADDD.BCST (TAB_IV+16)(R9), Z4, Z4
	VMOVDQU32 Z4, 256(DI)
	VPADDD.BCST (TAB_IV+20)(R9), Z5, Z5
	VMOVDQU32 Z5, 320(DI)
	VPADDD.BCST (TAB_IV+24)(R9), Z6, Z6
	VMOVDQU32 Z6, 384(DI)
	VPADDD.BCST (TAB_IV+28)(R9), Z7, Z7
	VMOVDQU32 Z7, 448(DI)
	ADDQ $64, DX
	DECQ BX
	JNZ  stripe

	// No key material stays in the vector registers.
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	VPXORD Z28, Z28, Z28
	VPXORD Z29, Z29, Z29
	VPXORD Z30, Z30, Z30
	VPXORD Z31, Z31, Z31
	VZEROUPPER
	RET
