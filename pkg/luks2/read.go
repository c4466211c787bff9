package luks2

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/atrest/atrest/pkg/blockdev/signature"
	"github.com/atrest/atrest/pkg/luks2/internal/ojson"
)

// Read reads and validates the LUKS2 header of dev: both copies, their
// checksums and JSON metadata, as strictly as cryptsetup 2.6. It returns the
// valid copy with the highest sequence id; Header.Copies tells whether the
// other copy needs Repair. Read never writes (cryptsetup repairs a damaged
// copy while reading; atrest leaves that to Repair and to every commit).
//
// Errors wrap ErrNotLUKS, ErrLUKS1, ErrHeaderDamaged (with a DamagedError
// naming what is wrong with each copy), ErrAmbiguousSignatures (a copy
// needs repair and another signature, such as an LVM label, is in the
// header region) or ErrDeviceTooSmall (no room for the header and
// keyslots area). A device that holds those but not the data segment
// reads fine, with Header.Data.Err saying what is missing. When dev is a
// Locker, Read holds a shared lock while reading.
func Read(ctx context.Context, dev Reader) (*Header, error) {
	release, err := lock(ctx, dev, false)
	if err != nil {
		return nil, err
	}
	defer release()
	return readHeader(ctx, dev)
}

// Version reports which LUKS version's primary header dev carries: 1, 2,
// or 0 when there is no LUKS magic at offset 0 (a damaged LUKS2 primary
// copy also gives 0: use Read to tell). It decides the type, as in
// cryptsetup: Read refuses anything but 0 and 2.
func Version(dev io.ReaderAt) int {
	var b [8]byte
	if _, err := dev.ReadAt(b[:], 0); err != nil || !bytes.Equal(b[:6], magicPrimary) {
		return 0
	}
	return int(binary.BigEndian.Uint16(b[6:8]))
}

// copyRead is one header copy as found on the device.
type copyRead struct {
	offset   uint64
	present  bool // the magic is there
	readable bool // binary checks and checksum passed
	bin      binHeader
	full     []byte // the binary header and the JSON area, as read
	readErr  error  // the device failed a read (not a short device)
	area     []byte // full's JSON area
	hdr      *Header
	err      error
}

func readHeader(ctx context.Context, dev Reader) (*Header, error) {
	size, err := dev.Size()
	if err != nil {
		return nil, fmt.Errorf("luks2: device size: %w", err)
	}
	// The primary's version field decides the type, as in cryptsetup's
	// crypt_load: a LUKS1 or future-version primary is not read as LUKS2
	// even if a LUKS2 secondary copy follows it. Only without a LUKS magic
	// at 0 (or with version 0, a damaged LUKS2 primary) is the secondary
	// looked for.
	switch v := Version(dev); {
	case v == 1:
		return nil, ErrLUKS1
	case v > 2:
		return nil, fmt.Errorf("%w: unsupported LUKS version %d", ErrNotLUKS, v)
	}
	c1 := readCopy(dev, size, 0, false, nil)
	var c2 copyRead
	if c1.readable {
		c2 = readCopy(dev, size, c1.bin.hdrSize, true, &c1)
	} else {
		c2 = scanSecondary(dev, size)
	}
	if !c1.present && !c2.present {
		// A copy the device would not read may be there: the device is
		// failing, not blank.
		switch {
		case c1.readErr != nil && c2.readErr != nil:
			return nil, fmt.Errorf("%w: %w; %w", ErrHeaderUnreadable, c1.readErr, c2.readErr)
		case c1.readErr != nil || c2.readErr != nil:
			return nil, fmt.Errorf("%w: %w", ErrHeaderUnreadable, cmp.Or(c1.readErr, c2.readErr))
		}
		return nil, ErrNotLUKS
	}
	chosen := &c1
	switch {
	case c1.hdr != nil && c2.hdr != nil:
		if c2.bin.seqID > c1.bin.seqID {
			chosen = &c2
		}
	case c2.hdr != nil:
		chosen = &c2
	case c1.hdr == nil:
		return nil, &DamagedError{Copies: []*CopyError{c1.copyError("primary"), c2.copyError("secondary")}}
	}
	h := chosen.hdr
	h.Copies = [2]CopyStatus{c1.status(), c2.status()}
	h.salts = [2][saltLen]byte{c1.bin.salt, c2.bin.salt}
	h.readBin, h.readArea = chosen.bin, chosen.area
	h.other = c2.hdr
	if chosen == &c2 {
		h.other = c1.hdr
	}
	if h.other == h {
		h.other = nil // identical copies: the other names nothing more
	}
	h.devSize = size
	if !h.NeedsRepair() && c2.offset == c1.bin.hdrSize {
		h.image = [2][]byte{c1.full, c2.full}
	}
	if end := h.AreasEnd(); uint64(size) < end {
		return nil, fmt.Errorf("%w: %d bytes hold no header and keyslots area of %d bytes", ErrDeviceTooSmall, size, end)
	}
	h.checkData(uint64(size))
	if h.NeedsRepair() {
		if err := checkForeign(ctx, dev, size, h.AreasEnd()); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (c *copyRead) status() CopyStatus {
	s := CopyStatus{Offset: c.offset, Valid: c.hdr != nil, Err: c.err}
	if c.readable {
		s.SeqID = c.bin.seqID
	}
	return s
}

func (c *copyRead) copyError(which string) *CopyError {
	return &CopyError{Copy: which, Offset: c.offset, Err: c.err}
}

// scanSecondary looks for the secondary copy at every offset a metadata size
// allows, as cryptsetup does when the primary copy gives no size.
func scanSecondary(dev Reader, size int64) copyRead {
	var first copyRead
	present := false
	var readErr error
	for i, off := range secondaryOffsets {
		c := readCopy(dev, size, off, true, nil)
		present = present || c.present
		if readErr == nil {
			readErr = c.readErr
		}
		if c.readable {
			c.present = true
			return c
		}
		if i == 0 {
			first = c
		}
	}
	first.present = present
	first.readErr = readErr
	if !present {
		first.err = errors.New("no secondary header at any known offset")
	}
	return first
}

// noteReadErr records err as the device failing a read unless it only
// says the device ended.
func (c *copyRead) noteReadErr(err error) {
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		c.readErr = fmt.Errorf("at byte %d: %w", c.offset, err)
	}
}

// readCopy reads and decodes the header copy at offset. like is the copy
// read before (the primary, when this is the secondary at
// the primary's size) or nil. When the two agree in everything decodeCopy
// reads (the binary fields it takes and the whole JSON area, as after
// every commit), this copy's decoding is like's: parsing and validating
// identical input again would only give the identical result.
func readCopy(dev Reader, size int64, offset uint64, secondary bool, like *copyRead) copyRead {
	c := copyRead{offset: offset}
	if offset+BinaryHeaderSize > uint64(size) {
		c.err = errors.New("beyond the end of the device")
		return c
	}
	raw := make([]byte, BinaryHeaderSize)
	if _, err := dev.ReadAt(raw, int64(offset)); err != nil {
		c.err = fmt.Errorf("read: %w", err)
		c.noteReadErr(err)
		return c
	}
	c.bin = decodeBin(raw)
	want := magicPrimary
	if secondary {
		want = magicSecondary
	}
	c.present = bytes.Equal(c.bin.magic, want)
	if c.err = c.bin.checkPre(secondary, offset); c.err != nil {
		return c
	}
	if offset+c.bin.hdrSize > uint64(size) {
		c.err = fmt.Errorf("header of %d bytes runs past the end of the device", c.bin.hdrSize)
		return c
	}
	c.full = make([]byte, c.bin.hdrSize)
	copy(c.full, raw)
	c.area = c.full[BinaryHeaderSize:]
	if _, err := dev.ReadAt(c.area, int64(offset+BinaryHeaderSize)); err != nil {
		c.err = fmt.Errorf("read JSON area: %w", err)
		c.noteReadErr(err)
		return c
	}
	if c.err = c.bin.verifyChecksum(raw, c.area); c.err != nil {
		return c
	}
	c.readable = true
	if like != nil && like.readable && sameDecodeInput(&like.bin, &c.bin) && bytes.Equal(like.area, c.area) {
		c.hdr, c.err = like.hdr, like.err
		return c
	}
	c.hdr, c.err = decodeCopy(&c.bin, c.area)
	return c
}

// sameDecodeInput reports whether two binary headers agree in every field
// decodeCopy uses.
func sameDecodeInput(a, b *binHeader) bool {
	return a.seqID == b.seqID && a.uuid == b.uuid && a.label == b.label && a.subsystem == b.subsystem &&
		a.checksumAlg == b.checksumAlg && a.hdrSize == b.hdrSize
}

// decodeCopy parses and validates the JSON area of a copy whose checksum
// matched.
func decodeCopy(bin *binHeader, area []byte) (*Header, error) {
	top, err := parseJSONArea(area)
	if err != nil {
		return nil, invalid("%s", err)
	}
	h := &Header{
		SeqID:        bin.seqID,
		UUID:         bin.uuid,
		Label:        bin.label,
		Subsystem:    bin.subsystem,
		ChecksumAlg:  bin.checksumAlg,
		MetadataSize: bin.hdrSize,
	}
	if err := decodeJSON(h, top); err != nil {
		return nil, err
	}
	if err := h.validate(uint64(len(area))); err != nil {
		return nil, err
	}
	if n := len(h.encodeJSON()); uint64(n) > h.Config.JSONSize {
		return nil, invalid("JSON metadata (%d bytes) does not fit the JSON area (%d bytes)", n, h.Config.JSONSize)
	}
	return h, nil
}

// parseJSONArea enforces cryptsetup's framing: the area starts with '{',
// holds exactly one JSON object (json-c also takes whitespace after it) and
// is NUL from there on, with at least one NUL.
func parseJSONArea(area []byte) (*ojson.Value, error) {
	if len(area) == 0 || area[0] != '{' {
		return nil, errors.New("JSON area does not start with '{'")
	}
	n := bytes.IndexByte(area, 0)
	if n < 0 {
		return nil, errors.New("JSON area has no terminating NUL byte")
	}
	for i := n; i < len(area); i++ {
		if area[i] != 0 {
			return nil, fmt.Errorf("byte 0x%02x at JSON area offset %d after the JSON text", area[i], i)
		}
	}
	v, err := ojson.Parse(area[:n])
	if err != nil {
		return nil, fmt.Errorf("JSON metadata: %w", err)
	}
	return v, nil
}

// checkForeign refuses a device one of whose header copies needs recovery
// (damaged, or older than the other) while another known signature (a
// filesystem, an LVM label, a partition table) has a magic in the LUKS2
// metadata region [0, end): the valid copy may be what is left of an old
// LUKS2 volume, and reading it as the volume (or repairing the other copy
// from it) would put a LUKS2 header over whatever the device holds now.
// This is cryptsetup's "Device contains ambiguous signatures, cannot
// auto-recover LUKS2", which its luksDump and open give in the same case.
// Signatures only in the data area do not count: a LUKS2 volume holds
// ciphertext there, and what is left there (the backup GPT header at the
// end of a disk that once was partitioned) libblkid ignores without the
// primary partition table.
func checkForeign(ctx context.Context, dev Reader, size int64, end uint64) error {
	sigs, err := signature.Probe(ctx, dev, size, signature.Options{})
	if errors.Is(err, signature.ErrTooManySignatures) {
		return fmt.Errorf("%w: %v", ErrAmbiguousSignatures, err)
	}
	if err != nil {
		// ctx's end aside, the device failed a read.
		if ctx.Err() == nil {
			return fmt.Errorf("%w: looking for other signatures: %w", ErrHeaderUnreadable, err)
		}
		return fmt.Errorf("luks2: look for other signatures: %w", err)
	}
	var names []string
	for _, s := range sigs {
		inside := slices.ContainsFunc(s.Magics, func(m signature.Magic) bool { return m.Offset >= 0 && uint64(m.Offset) < end })
		if s.Type != "crypto_LUKS" && inside {
			names = append(names, s.String())
		}
	}
	if len(names) == 0 {
		return nil
	}
	return fmt.Errorf("%w: a LUKS2 header copy needs recovery and the device also holds %s", ErrAmbiguousSignatures, strings.Join(names, "; "))
}
