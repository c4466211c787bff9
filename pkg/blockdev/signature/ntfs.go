package signature

import "fmt"

// NTFS: "NTFS    " at 3, a BIOS parameter block with NTFS's zero fields,
// and MFT records ("FILE") where the boot sector says they are. Its 0x55AA
// boot signature is not part of the NTFS signature; once the NTFS magic is
// hidden the MBR probe sees it, as in wipefs.
var ntfsMagic = []byte("NTFS    ")

const ntfsMaxClusterSize = 2 << 20

func probeNTFS(v *view) ([]Signature, error) {
	bs, err := v.read(0, 512)
	if err != nil || bs == nil || string(bs[3:11]) != string(ntfsMagic) {
		return nil, err
	}
	ok, err := ntfsValid(v, bs)
	if err != nil || !ok {
		return nil, err
	}
	return []Signature{{
		Type:   "ntfs",
		Usage:  UsageFilesystem,
		UUID:   fmt.Sprintf("%016X", le64(bs[72:])),
		Magics: []Magic{magicAt(3, bs[3:11], "")},
	}}, nil
}

func ntfsValid(v *view, bs []byte) (bool, error) {
	sectorSize := uint64(le16(bs[11:]))
	if sectorSize < 256 || sectorSize > 4096 || !isPow2(sectorSize) {
		return false, nil
	}
	var spc uint64
	switch c := bs[13]; {
	case c >= 1 && c <= 128 && isPow2(uint64(c)):
		spc = uint64(c)
	case c >= 240 && c <= 249:
		spc = 1 << (256 - uint(c))
	default:
		return false, nil
	}
	if sectorSize*spc > ntfsMaxClusterSize {
		return false, nil
	}
	if le16(bs[14:]) != 0 || le16(bs[17:]) != 0 || le16(bs[19:]) != 0 ||
		le16(bs[22:]) != 0 || le32(bs[32:]) != 0 || bs[16] != 0 {
		return false, nil
	}
	cpm := int8(bs[64])
	if uint8(cpm) < 0xe1 || uint8(cpm) > 0xf7 {
		switch cpm {
		case 1, 2, 4, 8, 16, 32, 64:
		default:
			return false, nil
		}
	}
	var recSize uint64
	if cpm > 0 {
		recSize = uint64(cpm) * spc * sectorSize
	} else {
		shift := -int(cpm)
		if shift >= 31 {
			return false, nil
		}
		recSize = 1 << shift
	}
	clusters := le64(bs[40:]) / spc
	mft, mirr := le64(bs[48:]), le64(bs[56:])
	if mft > clusters || mirr > clusters || recSize < 4 {
		return false, nil
	}
	off := mft * sectorSize * spc
	for _, rec := range []uint64{0, 3} { // $MFT and $Volume
		at := off + rec*recSize
		if at > uint64(v.size) {
			return false, nil
		}
		ok, err := v.has(int64(at), []byte("FILE"))
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}
