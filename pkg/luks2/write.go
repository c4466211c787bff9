package luks2

import (
	"crypto/rand"
	"fmt"
	"io"
)

// renderedCopy is one header copy ready to be written.
type renderedCopy struct {
	offset uint64
	bin    []byte
	area   []byte
}

// render builds both copies of h with sequence id seq: binary headers with
// their checksums and zero-padded JSON areas.
func (h *Header) render(seq uint64) ([2]renderedCopy, error) {
	var out [2]renderedCopy
	text := h.encodeJSON()
	jsonSize := h.MetadataSize - BinaryHeaderSize
	if uint64(len(text)) >= jsonSize {
		return out, fmt.Errorf("%w: JSON metadata needs %d bytes, the JSON area holds %d", ErrNoSpace, len(text)+1, jsonSize)
	}
	area := make([]byte, jsonSize)
	copy(area, text)
	for i := range out {
		salt := h.salts[i]
		if salt == ([saltLen]byte{}) {
			if _, err := rand.Read(salt[:]); err != nil {
				return out, err
			}
			h.salts[i] = salt
		}
		b := binHeader{
			magic: magicPrimary, version: 2, hdrSize: h.MetadataSize, seqID: seq,
			label: h.Label, checksumAlg: h.ChecksumAlg, salt: salt,
			uuid: h.UUID, subsystem: h.Subsystem,
		}
		if i == 1 {
			b.magic = magicSecondary
			b.hdrOffset = h.MetadataSize
		}
		bin := encodeBin(&b)
		if err := sealBin(h.ChecksumAlg, bin, area); err != nil {
			return out, err
		}
		out[i] = renderedCopy{offset: b.hdrOffset, bin: bin, area: area}
	}
	return out, nil
}

// write puts the copy on dev: the JSON area first, then the binary header
// that seals it with its checksum. Until the second write completes, the
// copy either is unchanged or fails its checksum.
func (c renderedCopy) write(dev io.WriterAt) error {
	if _, err := dev.WriteAt(c.area, int64(c.offset+BinaryHeaderSize)); err != nil {
		return fmt.Errorf("luks2: write header JSON area at %d: %w", c.offset+BinaryHeaderSize, err)
	}
	if _, err := dev.WriteAt(c.bin, int64(c.offset)); err != nil {
		return fmt.Errorf("luks2: write binary header at %d: %w", c.offset, err)
	}
	return nil
}

// writeSynced writes the copy and syncs.
func (c renderedCopy) writeSynced(dev Device) error {
	if err := c.write(dev); err != nil {
		return err
	}
	if err := dev.Sync(); err != nil {
		return fmt.Errorf("luks2: sync: %w", err)
	}
	return nil
}

// writeHeaders writes the primary copy, syncs, then the secondary, and
// syncs: at no instant are both copies being written.
func writeHeaders(dev Device, copies [2]renderedCopy) error {
	for _, c := range copies {
		if err := c.writeSynced(dev); err != nil {
			return err
		}
	}
	return nil
}

// fillRandom overwrites [off, off+n) with random bytes.
func fillRandom(dev io.WriterAt, off, n uint64) error {
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		m := min(n, uint64(len(buf)))
		if _, err := rand.Read(buf[:m]); err != nil {
			return err
		}
		if _, err := dev.WriteAt(buf[:m], int64(off)); err != nil {
			return fmt.Errorf("luks2: wipe at %d: %w", off, err)
		}
		off += m
		n -= m
	}
	return nil
}
