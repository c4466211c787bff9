//go:build amd64 && !purego

#include "textflag.h"

// AES-XTS over whole sectors with AES-NI, eight blocks in flight. Tweaks
// are doubled in GF(2^128) in registers: with T in X8, PADDQ shifts each
// 64-bit half left, and the bits shifted out (sign-extended by PSRAL,
// moved by PSHUFD, masked with xtsGF) are the carry into the high half and
// the reduction 0x87 into the low one.
//
// Registers: AX data key schedule, BX tweak key schedule, DI the blocks,
// SI sectors left, R8 blocks per sector, R9 sector number, R12 offset of
// the last round key, R13 blocks left in the sector; X0-X7 the blocks in
// flight, X8 the tweak, X9 the round key, X11 the GF mask; the frame holds
// the eight tweaks in flight.

DATA xtsGF<>+0(SB)/8, $0x0000000000000087
DATA xtsGF<>+8(SB)/8, $0x0000000000000001
GLOBL xtsGF<>(SB), (NOPTR+RODATA), $16

// ARGS loads the arguments of both functions (same signature).
#define ARGS \
	MOVQ nr+0(FP), R12; \
	SHLQ $4, R12; \
	MOVQ data+8(FP), AX; \
	MOVQ tweak+16(FP), BX; \
	MOVQ buf+24(FP), DI; \
	MOVQ nsec+32(FP), SI; \
	MOVQ blocks+40(FP), R8; \
	MOVQ sector+48(FP), R9; \
	MOVOU xtsGF<>(SB), X11

// TWEAKNEXT multiplies X8 by x in GF(2^128), clobbering X10.
#define TWEAKNEXT \
	MOVO X8, X10; \
	PADDQ X8, X8; \
	PSRAL $31, X10; \
	PSHUFD $0x13, X10, X10; \
	PAND X11, X10; \
	PXOR X10, X8

// TWEAKS8 stores the next eight tweaks in the frame.
#define TWEAKS8 \
	MOVOU X8, 0(SP); \
	TWEAKNEXT; \
	MOVOU X8, 16(SP); \
	TWEAKNEXT; \
	MOVOU X8, 32(SP); \
	TWEAKNEXT; \
	MOVOU X8, 48(SP); \
	TWEAKNEXT; \
	MOVOU X8, 64(SP); \
	TWEAKNEXT; \
	MOVOU X8, 80(SP); \
	TWEAKNEXT; \
	MOVOU X8, 96(SP); \
	TWEAKNEXT; \
	MOVOU X8, 112(SP); \
	TWEAKNEXT

// LOAD8 loads eight blocks, XORs in their tweaks and round key 0.
#define LOAD8 \
	MOVOU 0(DI), X0; \
	MOVOU 16(DI), X1; \
	MOVOU 32(DI), X2; \
	MOVOU 48(DI), X3; \
	MOVOU 64(DI), X4; \
	MOVOU 80(DI), X5; \
	MOVOU 96(DI), X6; \
	MOVOU 112(DI), X7; \
	MOVOU 0(SP), X12; \
	PXOR X12, X0; \
	MOVOU 16(SP), X12; \
	PXOR X12, X1; \
	MOVOU 32(SP), X12; \
	PXOR X12, X2; \
	MOVOU 48(SP), X12; \
	PXOR X12, X3; \
	MOVOU 64(SP), X12; \
	PXOR X12, X4; \
	MOVOU 80(SP), X12; \
	PXOR X12, X5; \
	MOVOU 96(SP), X12; \
	PXOR X12, X6; \
	MOVOU 112(SP), X12; \
	PXOR X12, X7; \
	MOVOU (AX), X9; \
	PXOR X9, X0; \
	PXOR X9, X1; \
	PXOR X9, X2; \
	PXOR X9, X3; \
	PXOR X9, X4; \
	PXOR X9, X5; \
	PXOR X9, X6; \
	PXOR X9, X7

// ROUND8 applies one AES round instruction with key X9 to all eight.
#define ROUND8(op) \
	op X9, X0; \
	op X9, X1; \
	op X9, X2; \
	op X9, X3; \
	op X9, X4; \
	op X9, X5; \
	op X9, X6; \
	op X9, X7

// STORE8 XORs the tweaks back in and stores the eight blocks.
#define STORE8 \
	MOVOU 0(SP), X12; \
	PXOR X12, X0; \
	MOVOU X0, 0(DI); \
	MOVOU 16(SP), X12; \
	PXOR X12, X1; \
	MOVOU X1, 16(DI); \
	MOVOU 32(SP), X12; \
	PXOR X12, X2; \
	MOVOU X2, 32(DI); \
	MOVOU 48(SP), X12; \
	PXOR X12, X3; \
	MOVOU X3, 48(DI); \
	MOVOU 64(SP), X12; \
	PXOR X12, X4; \
	MOVOU X4, 64(DI); \
	MOVOU 80(SP), X12; \
	PXOR X12, X5; \
	MOVOU X5, 80(DI); \
	MOVOU 96(SP), X12; \
	PXOR X12, X6; \
	MOVOU X6, 96(DI); \
	MOVOU 112(SP), X12; \
	PXOR X12, X7; \
	MOVOU X7, 112(DI)

// WIPE clears the frame's tweaks and every register that held
// key-derived data.
#define WIPE \
	PXOR X0, X0; \
	MOVOU X0, 0(SP); \
	MOVOU X0, 16(SP); \
	MOVOU X0, 32(SP); \
	MOVOU X0, 48(SP); \
	MOVOU X0, 64(SP); \
	MOVOU X0, 80(SP); \
	MOVOU X0, 96(SP); \
	MOVOU X0, 112(SP); \
	PXOR X1, X1; \
	PXOR X2, X2; \
	PXOR X3, X3; \
	PXOR X4, X4; \
	PXOR X5, X5; \
	PXOR X6, X6; \
	PXOR X7, X7; \
	PXOR X8, X8; \
	PXOR X9, X9; \
	PXOR X10, X10; \
	PXOR X12, X12

// func xtsEncAsm(nr int, data, tweak, buf *byte, nsec, blocks int, sector uint64)
TEXT ·xtsEncAsm(SB), NOSPLIT, $128-56
	ARGS
encSector:
	TESTQ SI, SI
	JZ encDone
	// X8 = E(tweak key, sector number as 16 little-endian bytes)
	MOVQ R9, X8
	MOVOU (BX), X9
	PXOR X9, X8
	MOVQ $16, R10
encTweakRound:
	MOVOU (BX)(R10*1), X9
	CMPQ R10, R12
	JEQ encTweakLast
	AESENC X9, X8
	ADDQ $16, R10
	JMP encTweakRound
encTweakLast:
	AESENCLAST X9, X8
	MOVQ R8, R13
encBlocks:
	TWEAKS8
	LOAD8
	MOVQ $16, R10
encRound:
	MOVOU (AX)(R10*1), X9
	CMPQ R10, R12
	JEQ encLast
	ROUND8(AESENC)
	ADDQ $16, R10
	JMP encRound
encLast:
	ROUND8(AESENCLAST)
	STORE8
	ADDQ $128, DI
	SUBQ $8, R13
	JNZ encBlocks
	INCQ R9
	DECQ SI
	JMP encSector
encDone:
	WIPE
	RET

// func xtsDecAsm(nr int, data, tweak, buf *byte, nsec, blocks int, sector uint64)
TEXT ·xtsDecAsm(SB), NOSPLIT, $128-56
	ARGS
decSector:
	TESTQ SI, SI
	JZ decDone
	// X8 = E(tweak key, sector number as 16 little-endian bytes)
	MOVQ R9, X8
	MOVOU (BX), X9
	PXOR X9, X8
	MOVQ $16, R10
decTweakRound:
	MOVOU (BX)(R10*1), X9
	CMPQ R10, R12
	JEQ decTweakLast
	AESENC X9, X8
	ADDQ $16, R10
	JMP decTweakRound
decTweakLast:
	AESENCLAST X9, X8
	MOVQ R8, R13
decBlocks:
	TWEAKS8
	LOAD8
	MOVQ $16, R10
decRound:
	MOVOU (AX)(R10*1), X9
	CMPQ R10, R12
	JEQ decLast
	ROUND8(AESDEC)
	ADDQ $16, R10
	JMP decRound
decLast:
	ROUND8(AESDECLAST)
	STORE8
	ADDQ $128, DI
	SUBQ $8, R13
	JNZ decBlocks
	INCQ R9
	DECQ SI
	JMP decSector
decDone:
	WIPE
	RET

// func aesSubWord(w uint32) uint32
TEXT ·aesSubWord(SB), NOSPLIT, $0-12
	MOVL w+0(FP), AX
	MOVL AX, X0
	PSHUFD $0, X0, X0
	PXOR X1, X1
	AESENCLAST X1, X0
	MOVL X0, AX
	MOVL AX, ret+8(FP)
	PXOR X0, X0
	XORL AX, AX
	RET

// func aesInvMixColumns(dst, src *byte)
TEXT ·aesInvMixColumns(SB), NOSPLIT, $0-16
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVOU (SI), X0
	AESIMC X0, X0
	MOVOU X0, (DI)
	PXOR X0, X0
	RET
