package dmcrypt

import (
	"fmt"
	"strconv"
	"strings"

	devmapper "github.com/anatol/devmapper.go"
)

// TargetLine is one crypt target of a table, as `dmsetup table` prints
// it (String) and as it is loaded (Table).
type TargetLine struct {
	// Start and Length are in 512-byte sectors of the mapping.
	Start, Length uint64
	// KeyRef is the key field (a keyring reference), IVOffset the IV
	// offset, Device the major:minor and Offset the sector on it.
	KeyRef     string
	IVOffset   uint64
	Device     string
	Offset     uint64
	Flags      Flag
	SectorSize uint32
}

// String is the line as the kernel prints the table.
func (l TargetLine) String() string {
	s := fmt.Sprintf("%d %d crypt %s %s %d %s %d", l.Start, l.Length, CipherAESXTSPlain64, l.KeyRef, l.IVOffset, l.Device, l.Offset)
	opts := l.Flags.Names()
	if l.SectorSize != 0 && l.SectorSize != 512 {
		opts = append(opts, "sector_size:"+strconv.Itoa(int(l.SectorSize)))
	}
	if len(opts) > 0 {
		s += " " + strconv.Itoa(len(opts)) + " " + strings.Join(opts, " ")
	}
	return s
}

// Table is the line for devmapper.Load.
func (l TargetLine) Table() devmapper.Table {
	return devmapper.CryptTable{
		Start: l.Start * 512, Length: l.Length * 512,
		BackendDevice: l.Device, BackendOffset: l.Offset * 512,
		Encryption: CipherAESXTSPlain64, KeyID: l.KeyRef, IVTweak: l.IVOffset,
		Flags: l.Flags.Names(), SectorSize: uint64(max(l.SectorSize, 512)),
	}
}

// OverlayTable is the overlay's table for segs, each crypt target's key
// named by keyRef(segment): the targets cryptsetup's
// reencrypt_make_targets builds. Segments are contiguous from sector 0; a
// hotzone segment maps onto hotzone (major:minor) at its offset within the
// data area, the others onto backing at their absolute offset.
func OverlayTable(segs []ReencryptSegment, sizeSectors, dataOffsetSectors uint64, backing, hotzone string, flags Flag, keyRef func(ReencryptSegment) string) ([]TargetLine, error) {
	var out []TargetLine
	start := uint64(0)
	for i, sg := range segs {
		n := sg.Sectors
		if n == 0 {
			if i != len(segs)-1 {
				return nil, fmt.Errorf("%w: segment %d of %d has no length", ErrInvalidParams, i, len(segs))
			}
			n = sizeSectors - start
		}
		if n == 0 || start+n > sizeSectors {
			return nil, fmt.Errorf("%w: segment %d (%d sectors at %d) outside the %d-sector data area", ErrInvalidParams, i, n, start, sizeSectors)
		}
		dev, off := backing, sg.OffsetSectors
		if sg.Hotzone {
			if hotzone == "" {
				return nil, fmt.Errorf("%w: a hotzone segment without a hotzone device", ErrInvalidParams)
			}
			dev, off = hotzone, sg.OffsetSectors-dataOffsetSectors
		}
		out = append(out, TargetLine{Start: start, Length: n, KeyRef: keyRef(sg), IVOffset: sg.IVOffset,
			Device: dev, Offset: off, Flags: flags, SectorSize: sg.SectorSize})
		start += n
	}
	if start != sizeSectors {
		return nil, fmt.Errorf("%w: segments cover %d of %d sectors", ErrInvalidParams, start, sizeSectors)
	}
	return out, nil
}

// loadLines loads lines as name's inactive table.
func loadLines(name string, lines []TargetLine) error {
	tables := make([]devmapper.Table, len(lines))
	for i, l := range lines {
		tables[i] = l.Table()
	}
	return devmapper.Load(name, 0, tables...)
}
