package signature

import "fmt"

// Linux md RAID member superblocks (libblkid's linux_raid probe):
//   - 0.90: at the last 64 KiB-aligned 64 KiB block of the device, magic
//     0xa92b4efc in either byte order;
//   - 1.0: 8 KiB before the end (rounded down to 4 KiB);
//   - 1.1: at 0; 1.2: at 4 KiB.
//
// Version 1 superblocks must name their own offset (super_offset, in
// sectors); their checksum is accepted even when wrong, as wipefs does.
const (
	mdMagic         = 0xa92b4efc
	mdReservedBytes = 0x10000
)

func probeMD(v *view) ([]Signature, error) {
	var out []Signature
	if v.size > mdReservedBytes {
		off := (v.size &^ (mdReservedBytes - 1)) - mdReservedBytes
		s, err := probeMD0(v, off)
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
		s, err = probeMD1(v, (v.size&^0xfff)-0x2000, "1.0")
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	for _, c := range []struct {
		off int64
		ver string
	}{{0, "1.1"}, {0x1000, "1.2"}} {
		s, err := probeMD1(v, c.off, c.ver)
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	return out, nil
}

func probeMD0(v *view, off int64) ([]Signature, error) {
	sb, err := v.read(off, 64)
	if err != nil || sb == nil {
		return nil, err
	}
	u32 := le32
	switch {
	case le32(sb) == mdMagic:
	case be32(sb) == mdMagic:
		u32 = be32
	default:
		return nil, nil
	}
	ma, mi, pa := u32(sb[4:]), u32(sb[8:]), u32(sb[12:])
	size := uint64(u32(sb[32:])) << 10 // KiB to bytes
	if uint64(v.size) < size+mdReservedBytes || uint64(off) < size {
		return nil, nil
	}
	// The set UUID is stored as four 32-bit words; libblkid prints them in
	// the superblock's byte order swapped to big-endian.
	var uuid [16]byte
	words := []int{20, 52, 56, 60}
	n := 1
	if mi >= 90 {
		n = 4
	}
	for i := 0; i < n; i++ {
		w := u32(sb[words[i]:])
		uuid[4*i], uuid[4*i+1], uuid[4*i+2], uuid[4*i+3] = byte(w>>24), byte(w>>16), byte(w>>8), byte(w)
	}
	return []Signature{{
		Type:    "linux_raid_member",
		Usage:   UsageRAID,
		Version: fmt.Sprintf("%d.%d.%d", ma, mi, pa),
		UUID:    uuidString(uuid[:]),
		Magics:  []Magic{magicAt(off, sb[:4], "")},
	}}, nil
}

func probeMD1(v *view, off int64, ver string) ([]Signature, error) {
	sb, err := v.read(off, 256)
	if err != nil || sb == nil {
		return nil, err
	}
	if le32(sb) != mdMagic || le32(sb[4:]) != 1 || le64(sb[144:]) != uint64(off)>>9 {
		return nil, nil
	}
	return []Signature{{
		Type:    "linux_raid_member",
		Usage:   UsageRAID,
		Version: ver,
		UUID:    uuidString(sb[16:32]),
		Label:   cstr(sb[32:64]),
		Magics:  []Magic{magicAt(off, sb[:4], "")},
	}}, nil
}
