//go:build !amd64 || purego

package sha2

// No assembly: the tests' switches to the generic code change nothing.
var haveSHANI, haveAVX2, haveAVX512 = false, false, false

func block512x8(state *[8][8]uint64, msg *[16][8]uint64, l *laneState, n int) {
	block512x8Lanes(state, msg, l, n)
}

func block256(dig *[8]uint32, p []byte) { block256Generic(dig, p) }

func block512(dig *[8]uint64, p []byte) { block512Generic(dig, p) }

func block256x2(a, b *[8]uint32, pa, pb []byte) {
	block256Generic(a, pa[:64])
	block256Generic(b, pb[:64])
}

var haveAVX512BW = false

func merge256x16(d *[8][16]uint32, srcs *[MergeLanes]*byte, n int, tab *[29][16]uint32) {
	panic("sha2: no lanes to merge in")
}
