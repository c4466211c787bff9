package luks2

import (
	"crypto/rand"
	"fmt"
	"slices"
	"strings"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/secret"
)

// FormatOptions describe a new volume. The layout is fixed to cryptsetup
// 2.6's defaults: 16 KiB metadata copies, a 16744448-byte keyslots area and
// the data at 16 MiB, encrypted with aes-xts-plain64.
type FormatOptions struct {
	// UUID of the volume; a random (version 4) UUID when empty.
	UUID string
	// Label and Subsystem, at most 47 bytes each.
	Label, Subsystem string
	// SectorSize is the encryption sector size: 512, 1024, 2048 or 4096
	// (the default, when 0).
	SectorSize uint32
	// Flags are persistent activation flags (FlagAllowDiscards, ...).
	Flags []string
	// VolumeKey to use; New generates 64 random bytes when nil. New keeps
	// a copy; the caller still owns (and wipes) the key it passed.
	VolumeKey *secret.Key
}

// Cipher is the data and keyslot encryption atrest writes.
const Cipher = "aes-xts-plain64"

// VolumeKeySize is the length of the volume keys New generates (512 bits
// for AES-256 in XTS mode).
const VolumeKeySize = 64

// New builds the header of a new volume in memory and returns it with the
// volume key (which the caller wipes). Nothing is written: add keyslots and
// tokens with h.Begin(), then Commit formats the device. That commit
// zeroes everything before the data offset (destroying any earlier header
// and its keyslots) and needs a device larger than the data offset.
func New(opts FormatOptions) (*Header, *secret.Key, error) {
	sector := opts.SectorSize
	if sector == 0 {
		sector = 4096
	}
	if sector != 512 && sector != 1024 && sector != 2048 && sector != 4096 {
		return nil, nil, fmt.Errorf("luks2: sector size %d is not 512, 1024, 2048 or 4096", sector)
	}
	if len(opts.Label) >= labelLen || len(opts.Subsystem) >= labelLen {
		return nil, nil, fmt.Errorf("luks2: label and subsystem hold at most %d bytes", labelLen-1)
	}
	for _, f := range opts.Flags {
		if !slices.Contains(KnownFlags, f) {
			return nil, nil, fmt.Errorf("luks2: unknown persistent flag %q", f)
		}
	}
	uuid := opts.UUID
	if uuid == "" {
		var err error
		if uuid, err = NewUUID(); err != nil {
			return nil, nil, err
		}
	} else if err := checkUUID(uuid); err != nil {
		return nil, nil, err
	}
	uuid = strings.ToLower(uuid) // libuuid's uuid_unparse spelling
	var vk *secret.Key
	var err error
	if opts.VolumeKey != nil {
		if n := opts.VolumeKey.Len(); n != 32 && n != 64 {
			return nil, nil, fmt.Errorf("luks2: %d-byte volume key (aes-xts-plain64 takes 32 or 64)", n)
		}
		vk, err = opts.VolumeKey.Clone()
	} else {
		vk, err = secret.Random(VolumeKeySize)
	}
	if err != nil {
		return nil, nil, err
	}
	d, err := newDigest(0, vk)
	if err != nil {
		vk.Wipe()
		return nil, nil, err
	}
	h := &Header{
		UUID: uuid, Label: opts.Label, Subsystem: opts.Subsystem,
		ChecksumAlg: "sha256", MetadataSize: DefaultMetadataSize,
		Keyslots: map[int]*Keyslot{}, Tokens: map[int]*Token{},
		Segments: map[int]*Segment{0: {
			ID: 0, Type: "crypt", Offset: DefaultDataOffset, Dynamic: true,
			Encryption: Cipher, SectorSize: sector,
		}},
		Digests: map[int]*Digest{0: d},
		Config: Config{
			JSONSize:     DefaultMetadataSize - BinaryHeaderSize,
			KeyslotsSize: DefaultKeyslotsSize,
			Flags:        orderFlags(opts.Flags),
		},
		fresh: true,
	}
	for i := range h.salts {
		if _, err := rand.Read(h.salts[i][:]); err != nil {
			vk.Wipe()
			return nil, nil, err
		}
	}
	return h, vk, nil
}

// commitFormat writes a new volume: the metadata region is zeroed, then
// keyslot areas and both header copies are written and synced once. There is
// no old state to protect: the caller chose to format.
func (u *Update) commitFormat(dev Device) (*Header, error) {
	next := u.next
	seg := next.Segments[0]
	if f := next.segmentByFlag(flagBackupFinal); f != nil {
		seg = f // an encryption in place (BeginEncrypt): segment 0 is linear
	}
	size, err := dev.Size()
	if err != nil {
		return nil, fmt.Errorf("luks2: device size: %w", err)
	}
	if uint64(size) < seg.Offset+uint64(seg.SectorSize) {
		return nil, fmt.Errorf("%w: %d bytes leave no data after the %d-byte header", ErrDeviceTooSmall, size, seg.Offset)
	}
	if (uint64(size)-seg.Offset)%uint64(seg.SectorSize) != 0 {
		return nil, fmt.Errorf("luks2: device size %d is not a multiple of the %d-byte sector size", size, seg.SectorSize)
	}
	copies, err := next.render(1)
	if err != nil {
		return nil, err
	}
	u.done = true
	if z, ok := dev.(Zeroer); ok {
		err = z.ZeroRange(0, int64(seg.Offset))
	} else {
		err = blockdev.WriteZeros(dev, 0, int64(seg.Offset))
	}
	if err != nil {
		return nil, fmt.Errorf("luks2: clear the metadata region: %w", err)
	}
	for _, id := range next.KeyslotIDs() {
		if area, ok := u.pending[id]; ok {
			if _, err := dev.WriteAt(area, int64(next.Keyslots[id].Area.Offset)); err != nil {
				return nil, fmt.Errorf("luks2: write keyslot %d area: %w", id, err)
			}
		}
	}
	for _, c := range copies {
		if err := c.write(dev); err != nil {
			return nil, err
		}
	}
	if err := dev.Sync(); err != nil {
		return nil, fmt.Errorf("luks2: sync: %w", err)
	}
	next.checkData(uint64(size))
	next.committed(1).setImage(copies, size)
	return next, nil
}

// NewUUID returns a random (version 4) UUID, as FormatOptions.UUID takes
// it: for a caller that names the volume before it makes its header.
func NewUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// checkUUID accepts the textual UUID form libuuid parses.
func checkUUID(s string) error {
	if len(s) != 36 {
		return fmt.Errorf("luks2: UUID %q is not 36 characters", s)
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return fmt.Errorf("luks2: UUID %q lacks a dash at position %d", s, i)
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return fmt.Errorf("luks2: UUID %q has a non-hex character", s)
			}
		}
	}
	return nil
}
