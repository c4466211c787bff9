//go:build amd64 && !purego

#include "textflag.h"

// block512x4AVX2 compresses four SHA-512 blocks, one per lane, into four
// states with AVX2, where there is no AVX-512: the same layout as
// block512x8AVX512's (lane l's state word w at state[w*8+l], its message
// word i at msg[i*8+l]), of which it does the four lanes its pointers
// start at. AVX2 has no 64-bit rotation: each is two shifts whose results
// are XORed into the sum of the three. The state lives in Y0-Y7 (the names
// rotate from round to round instead of the values), the message schedule
// in a ring of sixteen on the stack, temporaries in Y8-Y14; the round
// constant is broadcast from k512.

// ROUND: h += S1(e) + Ch(e,f,g) + W[w] + k; d += h; h += S0(a) + Maj(a,b,c).
#define ROUND(a, b, c, d, e, f, g, h, w, k) \
	VPSRLQ $14, e, Y8         \
	VPSLLQ $50, e, Y9         \
	VPXOR  Y9, Y8, Y8         \
	VPSRLQ $18, e, Y9         \
	VPXOR  Y9, Y8, Y8         \
	VPSLLQ $46, e, Y9         \
	VPXOR  Y9, Y8, Y8         \
	VPSRLQ $41, e, Y9         \
	VPXOR  Y9, Y8, Y8         \
	VPSLLQ $23, e, Y9         \
	VPXOR  Y9, Y8, Y8         \
	VPXOR  f, g, Y9           \
	VPAND  e, Y9, Y9          \
	VPXOR  g, Y9, Y9          \
	VPBROADCASTQ k(AX), Y10   \
	VPADDQ w(SP), Y10, Y10    \
	VPADDQ Y8, h, h           \
	VPADDQ Y9, h, h           \
	VPADDQ Y10, h, h          \
	VPADDQ h, d, d            \
	VPSRLQ $28, a, Y8         \
	VPSLLQ $36, a, Y9         \
	VPXOR  Y9, Y8, Y8         \
	VPSRLQ $34, a, Y9         \
	VPXOR  Y9, Y8, Y8         \
	VPSLLQ $30, a, Y9         \
	VPXOR  Y9, Y8, Y8         \
	VPSRLQ $39, a, Y9         \
	VPXOR  Y9, Y8, Y8         \
	VPSLLQ $25, a, Y9         \
	VPXOR  Y9, Y8, Y8         \
	VPOR   a, c, Y9           \
	VPAND  b, Y9, Y9          \
	VPAND  a, c, Y10          \
	VPOR   Y10, Y9, Y9        \
	VPADDQ Y8, h, h           \
	VPADDQ Y9, h, h          

// SCHED: ring slot w16 (holding W[t-16]) becomes W[t] = s1(W[t-2]) +
// W[t-7] + s0(W[t-15]) + W[t-16].
#define SCHED(w16, w15, w7, w2) \
	VMOVDQU w15(SP), Y11       \
	VPSRLQ $1, Y11, Y12        \
	VPSLLQ $63, Y11, Y13       \
	VPXOR  Y13, Y12, Y12       \
	VPSRLQ $8, Y11, Y13        \
	VPXOR  Y13, Y12, Y12       \
	VPSLLQ $56, Y11, Y13       \
	VPXOR  Y13, Y12, Y12       \
	VPSRLQ $7, Y11, Y13        \
	VPXOR  Y13, Y12, Y12       \
	VMOVDQU w2(SP), Y11        \
	VPSRLQ $19, Y11, Y14       \
	VPSLLQ $45, Y11, Y13       \
	VPXOR  Y13, Y14, Y14       \
	VPSRLQ $61, Y11, Y13       \
	VPXOR  Y13, Y14, Y14       \
	VPSLLQ $3, Y11, Y13        \
	VPXOR  Y13, Y14, Y14       \
	VPSRLQ $6, Y11, Y13        \
	VPXOR  Y13, Y14, Y14       \
	VPADDQ Y14, Y12, Y12       \
	VPADDQ w7(SP), Y12, Y12    \
	VPADDQ w16(SP), Y12, Y12   \
	VMOVDQU Y12, w16(SP)      

// func block512x4AVX2(state *uint64, msg *uint64)
// Requires: AVX2
TEXT ·block512x4AVX2(SB), NOSPLIT, $512-16
	MOVQ state+0(FP), DI
	MOVQ msg+8(FP), SI
	LEAQ ·k512(SB), AX

	VMOVDQU 0(DI), Y0
	VMOVDQU 64(DI), Y1
	VMOVDQU 128(DI), Y2
	VMOVDQU 192(DI), Y3
	VMOVDQU 256(DI), Y4
	VMOVDQU 320(DI), Y5
	VMOVDQU 384(DI), Y6
	VMOVDQU 448(DI), Y7
	VMOVDQU 0(SI), Y8
	VMOVDQU Y8, 0(SP)
	VMOVDQU 64(SI), Y8
	VMOVDQU Y8, 32(SP)
	VMOVDQU 128(SI), Y8
	VMOVDQU Y8, 64(SP)
	VMOVDQU 192(SI), Y8
	VMOVDQU Y8, 96(SP)
	VMOVDQU 256(SI), Y8
	VMOVDQU Y8, 128(SP)
	VMOVDQU 320(SI), Y8
	VMOVDQU Y8, 160(SP)
	VMOVDQU 384(SI), Y8
	VMOVDQU Y8, 192(SP)
	VMOVDQU 448(SI), Y8
	VMOVDQU Y8, 224(SP)
	VMOVDQU 512(SI), Y8
	VMOVDQU Y8, 256(SP)
	VMOVDQU 576(SI), Y8
	VMOVDQU Y8, 288(SP)
	VMOVDQU 640(SI), Y8
	VMOVDQU Y8, 320(SP)
	VMOVDQU 704(SI), Y8
	VMOVDQU Y8, 352(SP)
	VMOVDQU 768(SI), Y8
	VMOVDQU Y8, 384(SP)
	VMOVDQU 832(SI), Y8
	VMOVDQU Y8, 416(SP)
	VMOVDQU 896(SI), Y8
	VMOVDQU Y8, 448(SP)
	VMOVDQU 960(SI), Y8
	VMOVDQU Y8, 480(SP)

	// Rounds 0-15 on the message words as copied.
	ROUND(Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, 0, 0)
	ROUND(Y7, Y0, Y1, Y2, Y3, Y4, Y5, Y6, 32, 8)
	ROUND(Y6, Y7, Y0, Y1, Y2, Y3, Y4, Y5, 64, 16)
	ROUND(Y5, Y6, Y7, Y0, Y1, Y2, Y3, Y4, 96, 24)
	ROUND(Y4, Y5, Y6, Y7, Y0, Y1, Y2, Y3, 128, 32)
	ROUND(Y3, Y4, Y5, Y6, Y7, Y0, Y1, Y2, 160, 40)
	ROUND(Y2, Y3, Y4, Y5, Y6, Y7, Y0, Y1, 192, 48)
	ROUND(Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y0, 224, 56)
	ROUND(Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, 256, 64)
	ROUND(Y7, Y0, Y1, Y2, Y3, Y4, Y5, Y6, 288, 72)
	ROUND(Y6, Y7, Y0, Y1, Y2, Y3, Y4, Y5, 320, 80)
	ROUND(Y5, Y6, Y7, Y0, Y1, Y2, Y3, Y4, 352, 88)
	ROUND(Y4, Y5, Y6, Y7, Y0, Y1, Y2, Y3, 384, 96)
	ROUND(Y3, Y4, Y5, Y6, Y7, Y0, Y1, Y2, 416, 104)
	ROUND(Y2, Y3, Y4, Y5, Y6, Y7, Y0, Y1, 448, 112)
	ROUND(Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y0, 480, 120)

	// Rounds 16-79, sixteen at a time: the state's names repeat every
	// eight rounds, the ring every sixteen, AX steps through the round
	// constants.
	MOVQ $4, CX

rounds:
	ADDQ $128, AX
	SCHED(0, 32, 288, 448)
	ROUND(Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, 0, 0)
	SCHED(32, 64, 320, 480)
	ROUND(Y7, Y0, Y1, Y2, Y3, Y4, Y5, Y6, 32, 8)
	SCHED(64, 96, 352, 0)
	ROUND(Y6, Y7, Y0, Y1, Y2, Y3, Y4, Y5, 64, 16)
	SCHED(96, 128, 384, 32)
	ROUND(Y5, Y6, Y7, Y0, Y1, Y2, Y3, Y4, 96, 24)
	SCHED(128, 160, 416, 64)
	ROUND(Y4, Y5, Y6, Y7, Y0, Y1, Y2, Y3, 128, 32)
	SCHED(160, 192, 448, 96)
	ROUND(Y3, Y4, Y5, Y6, Y7, Y0, Y1, Y2, 160, 40)
	SCHED(192, 224, 480, 128)
	ROUND(Y2, Y3, Y4, Y5, Y6, Y7, Y0, Y1, 192, 48)
	SCHED(224, 256, 0, 160)
	ROUND(Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y0, 224, 56)
	SCHED(256, 288, 32, 192)
	ROUND(Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, 256, 64)
	SCHED(288, 320, 64, 224)
	ROUND(Y7, Y0, Y1, Y2, Y3, Y4, Y5, Y6, 288, 72)
	SCHED(320, 352, 96, 256)
	ROUND(Y6, Y7, Y0, Y1, Y2, Y3, Y4, Y5, 320, 80)
	SCHED(352, 384, 128, 288)
	ROUND(Y5, Y6, Y7, Y0, Y1, Y2, Y3, Y4, 352, 88)
	SCHED(384, 416, 160, 320)
	ROUND(Y4, Y5, Y6, Y7, Y0, Y1, Y2, Y3, 384, 96)
	SCHED(416, 448, 192, 352)
	ROUND(Y3, Y4, Y5, Y6, Y7, Y0, Y1, Y2, 416, 104)
	SCHED(448, 480, 224, 384)
	ROUND(Y2, Y3, Y4, Y5, Y6, Y7, Y0, Y1, 448, 112)
	SCHED(480, 0, 256, 416)
	ROUND(Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y0, 480, 120)
	DECQ CX
	JNZ  rounds

	VPADDQ  0(DI), Y0, Y0
	VMOVDQU Y0, 0(DI)
	VPADDQ  64(DI), Y1, Y1
	VMOVDQU Y1, 64(DI)
	VPADDQ  128(DI), Y2, Y2
	VMOVDQU Y2, 128(DI)
	VPADDQ  192(DI), Y3, Y3
	VMOVDQU Y3, 192(DI)
	VPADDQ  256(DI), Y4, Y4
	VMOVDQU Y4, 256(DI)
	VPADDQ  320(DI), Y5, Y5
	VMOVDQU Y5, 320(DI)
	VPADDQ  384(DI), Y6, Y6
	VMOVDQU Y6, 384(DI)
	VPADDQ  448(DI), Y7, Y7
	VMOVDQU Y7, 448(DI)
	VZEROUPPER
	RET
