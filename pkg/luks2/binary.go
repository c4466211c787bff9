package luks2

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"

	"github.com/atrest/atrest/pkg/luks2/kdf"
)

// On-disk layout constants (cryptsetup lib/luks2/luks2.h).
const (
	// BinaryHeaderSize is the binary part of each header copy; the JSON
	// area follows it.
	BinaryHeaderSize = 4096
	// DefaultMetadataSize is one header copy (binary + JSON area): 16 KiB.
	DefaultMetadataSize = 0x4000
	// DefaultKeyslotsSize is cryptsetup 2.6's keyslots area for a 16 MiB
	// data offset and 16 KiB metadata: 16 MiB - 2*16 KiB.
	DefaultKeyslotsSize = 16744448
	// DefaultDataOffset is where the data segment starts: 16 MiB.
	DefaultDataOffset = 0x1000000
	// MaxKeyslotsSize bounds the keyslots area (128 MiB).
	MaxKeyslotsSize = 0x8000000
	// MaxKeyslots and MaxTokens bound the numbers usable for new objects.
	MaxKeyslots = 32
	MaxTokens   = 32
	labelLen    = 48
	uuidLen     = 40
	csumAlgLen  = 32
	saltLen     = 64
	csumLen     = 64
	maxHdrSize  = 0x400000
)

var (
	magicPrimary   = []byte("LUKS\xba\xbe")
	magicSecondary = []byte("SKUL\xba\xbe")
	// secondaryOffsets are where a secondary copy may start: one per legal
	// metadata size; scanned when the primary copy is unusable.
	secondaryOffsets = []uint64{0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000}
)

// validMetadataSize reports whether n is one of the nine metadata sizes
// LUKS2 allows (16 KiB to 4 MiB, powers of two).
func validMetadataSize(n uint64) bool {
	for _, o := range secondaryOffsets {
		if n == o {
			return true
		}
	}
	return false
}

// binHeader is the decoded binary part of one header copy.
type binHeader struct {
	magic       []byte
	version     uint16
	hdrSize     uint64
	seqID       uint64
	label       string
	checksumAlg string
	salt        [saltLen]byte
	uuid        string
	subsystem   string
	hdrOffset   uint64
	csum        [csumLen]byte
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	// cryptsetup terminates each field at its last byte.
	if len(b) == cap(b) && len(b) > 0 {
		b = b[:len(b)-1]
	}
	return string(b)
}

func decodeBin(b []byte) binHeader {
	var h binHeader
	h.magic = b[0:6]
	h.version = binary.BigEndian.Uint16(b[6:8])
	h.hdrSize = binary.BigEndian.Uint64(b[8:16])
	h.seqID = binary.BigEndian.Uint64(b[16:24])
	h.label = cString(b[24:72:72])
	h.checksumAlg = cString(b[72:104:104])
	copy(h.salt[:], b[104:168])
	h.uuid = cString(b[168:208:208])
	h.subsystem = cString(b[208:256:256])
	h.hdrOffset = binary.BigEndian.Uint64(b[256:264])
	copy(h.csum[:], b[448:512])
	return h
}

// encodeBin returns the 4096-byte binary header with a zero checksum.
func encodeBin(h *binHeader) []byte {
	b := make([]byte, BinaryHeaderSize)
	copy(b[0:6], h.magic)
	binary.BigEndian.PutUint16(b[6:8], h.version)
	binary.BigEndian.PutUint64(b[8:16], h.hdrSize)
	binary.BigEndian.PutUint64(b[16:24], h.seqID)
	copy(b[24:71], h.label)
	copy(b[72:103], h.checksumAlg)
	copy(b[104:168], h.salt[:])
	copy(b[168:207], h.uuid)
	copy(b[208:255], h.subsystem)
	binary.BigEndian.PutUint64(b[256:264], h.hdrOffset)
	return b
}

func checksumHash(alg string) (hash.Hash, error) {
	newHash, err := kdf.NewHash(alg)
	if err != nil {
		return nil, fmt.Errorf("checksum algorithm: %w", err)
	}
	return newHash(), nil
}

// checksum hashes the binary header with its checksum field zeroed, then the
// whole JSON area, as cryptsetup's hdr_checksum_calculate does.
func checksum(alg string, bin, jsonArea []byte) ([]byte, error) {
	h, err := checksumHash(alg)
	if err != nil {
		return nil, err
	}
	var zero [csumLen]byte
	h.Write(bin[:448])
	h.Write(zero[:])
	h.Write(bin[512:BinaryHeaderSize])
	h.Write(jsonArea)
	return h.Sum(nil), nil
}

// sealBin writes the checksum of bin+jsonArea into bin.
func sealBin(alg string, bin, jsonArea []byte) error {
	sum, err := checksum(alg, bin, jsonArea)
	if err != nil {
		return err
	}
	copy(bin[448:512], sum)
	return nil
}

// checkPre runs cryptsetup's sanity checks that precede reading the JSON
// area (hdr_disk_sanity_check_pre).
func (h *binHeader) checkPre(secondary bool, offset uint64) error {
	want := magicPrimary
	if secondary {
		want = magicSecondary
	}
	if !bytes.Equal(h.magic, want) {
		return errors.New("no LUKS2 magic")
	}
	if h.version != 2 {
		return fmt.Errorf("unsupported header version %d", h.version)
	}
	if h.hdrOffset != offset {
		return fmt.Errorf("header offset field %d differs from its position %d", h.hdrOffset, offset)
	}
	if h.hdrSize < DefaultMetadataSize || h.hdrSize > maxHdrSize {
		return fmt.Errorf("bogus header size %d", h.hdrSize)
	}
	if secondary && offset != h.hdrSize {
		return fmt.Errorf("secondary header at %d does not match its size %d", offset, h.hdrSize)
	}
	return nil
}

// verifyChecksum compares the stored checksum with the computed one.
func (h *binHeader) verifyChecksum(bin, jsonArea []byte) error {
	sum, err := checksum(h.checksumAlg, bin, jsonArea)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(sum, h.csum[:len(sum)]) != 1 {
		return errors.New("checksum mismatch")
	}
	return nil
}
