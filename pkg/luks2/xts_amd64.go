//go:build amd64 && !purego

package luks2

import (
	"encoding/binary"

	"golang.org/x/sys/cpu"
)

// haveAESNI selects the assembly XTS of xts_amd64.s.
var haveAESNI = cpu.X86.HasAES && cpu.X86.HasSSE41

// xtsEncAsm and xtsDecAsm en- or decrypt nsec consecutive sectors of
// blocks 16-byte blocks (a multiple of 8) at buf in place, the first being
// sector number sector. nr is the round count, data the data key's
// schedule (decryption schedule for xtsDecAsm), tweak the tweak key's.
//
//go:noescape
func xtsEncAsm(nr int, data, tweak, buf *byte, nsec, blocks int, sector uint64)

//go:noescape
func xtsDecAsm(nr int, data, tweak, buf *byte, nsec, blocks int, sector uint64)

// aesSubWord applies the AES S-box to each byte of w (AESENCLAST of w in
// every column with a zero round key: ShiftRows then moves nothing).
//
//go:noescape
func aesSubWord(w uint32) uint32

// aesInvMixColumns stores InvMixColumns(src) at dst (AESIMC).
//
//go:noescape
func aesInvMixColumns(dst, src *byte)

func xtsSectors(x *xtsAES, buf []byte, blocks int, first uint64, encrypt bool) {
	nsec := len(buf) / (blocks * 16)
	if encrypt {
		xtsEncAsm(x.nr, &x.encKeys()[0], &x.tweakKeys()[0], &buf[0], nsec, blocks, first)
	} else {
		xtsDecAsm(x.nr, &x.decKeys()[0], &x.tweakKeys()[0], &buf[0], nsec, blocks, first)
	}
}

// expandKeys writes the AES key schedule of key (FIPS-197 5.2) to enc as
// (rounds+1) 16-byte round keys in byte order, and when dec is not nil the
// schedule of the equivalent inverse cipher that AESDEC takes (5.3.5):
// enc's round keys reversed, InvMixColumns applied to all but the outer
// two. The S-box lookups are AES-NI instructions, not tables indexed by
// key bytes.
func expandKeys(key, enc, dec []byte) {
	nk := len(key) / 4
	nr := nk + 6
	words := 4 * (nr + 1)
	copy(enc, key)
	rcon := uint32(1)
	for i := nk; i < words; i++ {
		t := binary.LittleEndian.Uint32(enc[4*(i-1):])
		switch {
		case i%nk == 0:
			t = aesSubWord(t>>8|t<<24) ^ rcon
			rcon <<= 1
			if rcon&0x100 != 0 {
				rcon ^= 0x11b
			}
		case nk > 6 && i%nk == 4:
			t = aesSubWord(t)
		}
		binary.LittleEndian.PutUint32(enc[4*i:], binary.LittleEndian.Uint32(enc[4*(i-nk):])^t)
	}
	if dec == nil {
		return
	}
	copy(dec[:16], enc[16*nr:16*nr+16])
	for r := 1; r < nr; r++ {
		aesInvMixColumns(&dec[16*r], &enc[16*(nr-r)])
	}
	copy(dec[16*nr:16*nr+16], enc[:16])
}
