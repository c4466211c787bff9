package luks2

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
)

// xtsScheduleSize is the locked space newXTS keeps its round keys in: the
// data key's encryption and decryption schedules and the tweak key's
// encryption schedule, 15 round keys of 16 bytes each at most (AES-256).
const xtsScheduleSize = 3 * 15 * 16

// xtsAES is AES-XTS (IEEE 1619) with the plain64 IV: the tweak of a sector
// is its number, little-endian, encrypted with the second key half. It
// works in place on whole sectors.
//
// Go's crypto/aes offers no bulk ECB: a cipher.Block en- or decrypts one
// 16-byte block per call, so AES-NI's latency (not its throughput) bounds
// every mode built on it except CTR and GCM, which crypto/aes pipelines
// internally and which XTS cannot use. On amd64 with AES-NI the whole
// mode therefore runs in xts_amd64.s: a sector's tweak is encrypted there,
// its successors computed by doubling in registers, and eight blocks are
// in flight through the AES rounds at a time. Elsewhere it falls back to
// crypto/aes a block at a time.
type xtsAES struct {
	nr          int    // AES rounds: 10, 12 or 14
	sched       []byte // xtsScheduleSize bytes of locked memory (fast path)
	data, tweak cipher.Block
}

// newXTS keys AES-XTS with k (two AES keys of equal size). sched is
// xtsScheduleSize bytes of locked memory the caller wipes; the round keys
// live there on the fast path.
func newXTS(k, sched []byte) (*xtsAES, error) {
	if len(k)%2 != 0 {
		return nil, fmt.Errorf("keyslot cipher: odd XTS key length %d", len(k))
	}
	half := len(k) / 2
	if half != 16 && half != 24 && half != 32 {
		return nil, fmt.Errorf("keyslot cipher: %w", aes.KeySizeError(half))
	}
	x := &xtsAES{nr: half/4 + 6}
	if haveAESNI && len(sched) >= xtsScheduleSize {
		x.sched = sched[:xtsScheduleSize]
		expandKeys(k[:half], x.encKeys(), x.decKeys())
		expandKeys(k[half:], x.tweakKeys(), nil)
		return x, nil
	}
	var err error
	if x.data, err = aes.NewCipher(k[:half]); err != nil {
		return nil, fmt.Errorf("keyslot cipher: %w", err)
	}
	if x.tweak, err = aes.NewCipher(k[half:]); err != nil {
		return nil, fmt.Errorf("keyslot cipher: %w", err)
	}
	return x, nil
}

func (x *xtsAES) encKeys() []byte   { return x.sched[0:240] }
func (x *xtsAES) decKeys() []byte   { return x.sched[240:480] }
func (x *xtsAES) tweakKeys() []byte { return x.sched[480:720] }

// cryptSectors en- or decrypts buf, whole sectors of sectorSize bytes (a
// multiple of 16), in place; the first is sector number first.
func (x *xtsAES) cryptSectors(buf []byte, sectorSize int, first uint64, encrypt bool) {
	n := len(buf) / sectorSize
	if x.sched != nil {
		// LUKS2 sectors are powers of two from 512 to 4096 bytes.
		if sectorSize%128 != 0 {
			panic("luks2: XTS sector size is not a multiple of 128 bytes")
		}
		if n > 0 {
			xtsSectors(x, buf[:n*sectorSize], sectorSize/16, first, encrypt)
		}
		return
	}
	for i := range n {
		x.crypt(buf[i*sectorSize:(i+1)*sectorSize], first+uint64(i), encrypt)
	}
}

// crypt en- or decrypts one sector (a multiple of 16 bytes) in place, one
// block at a time through crypto/aes: the portable path.
func (x *xtsAES) crypt(sector []byte, num uint64, encrypt bool) {
	var t [16]byte
	binary.LittleEndian.PutUint64(t[:8], num)
	x.tweak.Encrypt(t[:], t[:])
	lo, hi := binary.LittleEndian.Uint64(t[:8]), binary.LittleEndian.Uint64(t[8:])
	for i := 0; i+16 <= len(sector); i += 16 {
		b := sector[i : i+16 : i+16]
		binary.LittleEndian.PutUint64(b[:8], binary.LittleEndian.Uint64(b[:8])^lo)
		binary.LittleEndian.PutUint64(b[8:], binary.LittleEndian.Uint64(b[8:])^hi)
		if encrypt {
			x.data.Encrypt(b, b)
		} else {
			x.data.Decrypt(b, b)
		}
		binary.LittleEndian.PutUint64(b[:8], binary.LittleEndian.Uint64(b[:8])^lo)
		binary.LittleEndian.PutUint64(b[8:], binary.LittleEndian.Uint64(b[8:])^hi)
		// Multiply the tweak by x in GF(2^128).
		carry := hi >> 63
		hi = hi<<1 | lo>>63
		lo = lo<<1 ^ carry*0x87
	}
	clear(t[:])
}
