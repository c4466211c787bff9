package luks2

import (
	"fmt"
	"slices"
	"strings"
)

// Activation is what a device-mapper crypt table for this volume needs
// (pkg/dmcrypt builds it from this and the volume key).
type Activation struct {
	// UUID is the volume UUID; dm UUIDs are CRYPT-LUKS2-<UUID without
	// dashes>-<name>.
	UUID string
	// Cipher is the kernel cipher spec, e.g. "aes-xts-plain64".
	Cipher string
	// KeySize is the volume key length in bytes.
	KeySize int
	// Offset is where the encrypted data starts, in bytes.
	Offset uint64
	// Size is the data length in bytes; 0 when Dynamic.
	Size uint64
	// Dynamic means the data runs to the end of the device: its length is
	// the device size minus Offset.
	Dynamic bool
	// IVTweak is the IV offset in 512-byte sectors (dm-crypt iv_offset).
	IVTweak uint64
	// SectorSize is the encryption sector size (512 to 4096).
	SectorSize uint32
	// Integrity is the dm-integrity type, "" without integrity.
	Integrity string
	// Flags are the persistent flags (config.flags), e.g. "allow-discards".
	Flags []string
	// DigestID is the digest of the volume key; cryptsetup names the kernel
	// keyring key "cryptsetup:<UUID>-d<DigestID>".
	DigestID int
}

// KeyringDescription returns the logon-key description cryptsetup uses for
// this volume key, so that both tools name the key the same way.
func (a Activation) KeyringDescription() string {
	return fmt.Sprintf("cryptsetup:%s-d%d", a.UUID, a.DigestID)
}

// Length returns the data length in bytes on a device of deviceSize bytes,
// checking that the segment fits.
func (a Activation) Length(deviceSize uint64) (uint64, error) {
	return segmentLength(a.Offset, a.Size, a.Dynamic, a.SectorSize, deviceSize)
}

// segmentLength is the length of a segment on a device of deviceSize
// bytes; an error wrapping ErrDeviceTooSmall when the device ends before
// it, inside it, or leaves a dynamic segment not one whole sector.
func segmentLength(offset, size uint64, dynamic bool, sector uint32, deviceSize uint64) (uint64, error) {
	if sector == 0 {
		sector = 512
	}
	if offset >= deviceSize {
		return 0, fmt.Errorf("%w: data offset %d at or past the device end %d: the data segment is missing", ErrDeviceTooSmall, offset, deviceSize)
	}
	n := size
	if dynamic {
		n = deviceSize - offset
		n -= n % uint64(sector)
	} else if offset+n > deviceSize {
		return 0, fmt.Errorf("%w: data segment ends at %d, past the device end %d: it is truncated", ErrDeviceTooSmall, offset+n, deviceSize)
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: no room for a %d-byte sector after offset %d: the data segment is missing", ErrDeviceTooSmall, sector, offset)
	}
	return n, nil
}

// DataStatus says whether the device a header was read from holds the
// data the header describes.
type DataStatus struct {
	// DeviceSize is the size of the device, in bytes.
	DeviceSize uint64
	// Length is the length of the data segments on it, in bytes.
	Length uint64
	// Err, when not nil, wraps ErrDeviceTooSmall: the device ends before
	// or inside a data segment (truncated to its header, say, or shrunk
	// below a fixed-size segment). The header itself is fine and can be
	// backed up, but the volume cannot be opened and is not healthy. A
	// header backup file has no data either, as expected.
	Err error
}

// checkData fills h.Data for a device of size bytes.
func (h *Header) checkData(size uint64) {
	h.Data = DataStatus{DeviceSize: size}
	for id := 0; id < len(h.Segments); id++ {
		s := h.Segments[id]
		if s == nil || s.isBackup() {
			continue
		}
		n, err := segmentLength(s.Offset, s.Size, s.Dynamic, s.SectorSize, size)
		if err != nil {
			h.Data.Err = fmt.Errorf("segment %d: %w", id, err)
			return
		}
		h.Data.Length += n
	}
}

// Activation returns the parameters of the volume's data segment. It fails
// for headers atrest cannot activate: unmet requirements (an unfinished
// reencryption), several data segments, or a segment that is not "crypt".
func (h *Header) Activation() (Activation, error) {
	if err := h.UnmetRequirements(); err != nil {
		return Activation{}, err
	}
	s, err := h.dataSegment()
	if err != nil {
		return Activation{}, err
	}
	d := h.DigestForSegment(s.ID)
	a := Activation{
		UUID: h.UUID, Cipher: s.Encryption, Offset: s.Offset, Size: s.Size, Dynamic: s.Dynamic,
		IVTweak: s.IVTweak, SectorSize: s.SectorSize, Integrity: s.Integrity,
		Flags: slices.Clone(h.Config.Flags), DigestID: d.ID,
	}
	for _, ks := range d.Keyslots {
		a.KeySize = h.Keyslots[ks].KeySize
		break
	}
	if a.KeySize == 0 {
		return a, fmt.Errorf("%w: no keyslot holds the volume key, so its size is unknown", ErrNoSuchKeyslot)
	}
	if strings.ContainsAny(a.Cipher, " \t\n") {
		return a, fmt.Errorf("%w: cipher %q", ErrInvalidHeader, a.Cipher)
	}
	return a, nil
}

// dataSegment returns the single regular crypt segment.
func (h *Header) dataSegment() (*Segment, error) {
	var regular []*Segment
	for id := 0; id < len(h.Segments); id++ {
		if s := h.Segments[id]; s != nil && !s.isBackup() {
			regular = append(regular, s)
		}
	}
	if len(regular) != 1 {
		return nil, fmt.Errorf("%w: %d data segments (atrest handles exactly one)", ErrUnsupported, len(regular))
	}
	if regular[0].Type != "crypt" {
		return nil, fmt.Errorf("%w: segment type %q", ErrUnsupported, regular[0].Type)
	}
	return regular[0], nil
}
