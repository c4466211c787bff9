package signature

import "fmt"

// FAT (vfat): libblkid knows a FAT boot sector by any of several magics —
// the type string at 0x52 (FAT32) or 0x36 (FAT12/16), the x86 jump opcode
// at 0, the 0x55AA boot signature at 0x1fe — and accepts the sector if the
// BIOS parameter block is sane. Since any one of them is enough for it,
// wipefs erases all of them, and so do we.
var (
	fatStringMagics = []struct {
		off   int64
		magic string
	}{
		{0x52, "MSWIN"}, {0x52, "FAT32   "},
		{0x36, "MSDOS"}, {0x36, "FAT16   "}, {0x36, "FAT12   "}, {0x36, "FAT     "},
	}
	bootSignature = []byte{0x55, 0xAA}
)

const (
	fat12Max = 0xFF4
	fat16Max = 0xFFF4
	fat32Max = 0x0FFFFFF6
)

func probeVFAT(v *view) ([]Signature, error) {
	bs, err := v.read(0, 512)
	if err != nil || bs == nil {
		return nil, err
	}
	var magics []Magic
	for _, m := range fatStringMagics {
		if string(bs[m.off:m.off+int64(len(m.magic))]) == m.magic {
			magics = append(magics, magicAt(m.off, []byte(m.magic), ""))
		}
	}
	hasString := len(magics) > 0
	if bs[0] == 0xEB || bs[0] == 0xE9 {
		magics = append(magics, magicAt(0, bs[:1], ""))
	}
	hasBootSig := string(bs[0x1fe:0x200]) == string(bootSignature)
	if hasBootSig {
		magics = append(magics, magicAt(0x1fe, bs[0x1fe:0x200], ""))
	}
	if len(magics) == 0 {
		return nil, nil
	}
	// The short magics (jump opcode, boot signature) count only with the
	// boot signature present and without JFS/HPFS's FAT-like pseudo header.
	if !hasString && (!hasBootSig || string(bs[0x36:0x3e]) == "JFS     " || string(bs[0x36:0x3e]) == "HPFS    ") {
		return nil, nil
	}
	clusters, ok := fatValid(bs)
	if !ok {
		return nil, nil
	}
	s := Signature{Type: "vfat", Usage: UsageFilesystem, Magics: sortMagics(magics)}
	serno, label := bs[0x27:0x2b], bs[0x2b:0x36]
	switch {
	case le16(bs[0x16:]) == 0:
		s.Version = "FAT32"
		serno, label = bs[0x43:0x47], bs[0x47:0x52]
	case clusters > fat12Max:
		s.Version = "FAT16"
	default:
		s.Version = "FAT12"
	}
	s.UUID = fmt.Sprintf("%02X%02X-%02X%02X", serno[3], serno[2], serno[1], serno[0])
	if l := cstr(label); l != "NO NAME" {
		s.Label = l
	}
	return []Signature{s}, nil
}

// fatValid is libblkid's fat_valid_superblock: it returns the cluster count
// and whether the BIOS parameter block describes a FAT filesystem.
func fatValid(bs []byte) (uint32, bool) {
	fats, clusterSize, media := uint32(bs[0x10]), uint32(bs[0x0d]), bs[0x15]
	reserved := uint32(le16(bs[0x0e:]))
	sectorSize := uint32(le16(bs[0x0b:]))
	if fats == 0 || reserved == 0 || !(media >= 0xf8 || media == 0xf0) ||
		!isPow2(uint64(clusterSize)) ||
		!isPow2(uint64(sectorSize)) || sectorSize < 512 || sectorSize > 4096 {
		return 0, false
	}
	dirEntries := uint32(le16(bs[0x11:]))
	sectors := uint32(le16(bs[0x13:]))
	if sectors == 0 {
		sectors = le32(bs[0x20:])
	}
	fat16Len := uint32(le16(bs[0x16:]))
	fat32Len := le32(bs[0x24:])
	fatLength := fat16Len
	if fatLength == 0 {
		fatLength = fat32Len
	}
	fatSize := fatLength * fats
	dirSize := (dirEntries*32 + sectorSize - 1) / sectorSize
	// The C code computes this in uint32 and lets it wrap; so do we.
	clusters := (sectors - (reserved + fatSize + dirSize)) / clusterSize
	maxCount := uint32(fat12Max)
	switch {
	case fat16Len == 0 && fat32Len != 0:
		maxCount = fat32Max
	case clusters > fat12Max:
		maxCount = fat16Max
	}
	if clusters > maxCount {
		return 0, false
	}
	return clusters, true
}

// exFAT: "EXFAT   " at 3 in a boot sector that passes libblkid's checks.
var exfatMagic = []byte("EXFAT   ")

func probeExFAT(v *view) ([]Signature, error) {
	bs, err := v.read(0, 512)
	if err != nil || bs == nil || !exfatValid(bs) {
		return nil, err
	}
	serno := bs[100:104]
	return []Signature{{
		Type:    "exfat",
		Usage:   UsageFilesystem,
		Version: fmt.Sprintf("%d.%d", bs[105], bs[104]),
		UUID:    fmt.Sprintf("%02X%02X-%02X%02X", serno[3], serno[2], serno[1], serno[0]),
		Magics:  []Magic{magicAt(3, bs[3:11], "")},
	}}, nil
}

func exfatValid(bs []byte) bool {
	if string(bs[3:11]) != string(exfatMagic) || le16(bs[510:]) != 0xAA55 ||
		string(bs[0:3]) != "\xEB\x76\x90" || !allZero(bs[11:64]) {
		return false
	}
	sectorShift, clusterShift, nfats := uint32(bs[108]), uint32(bs[109]), uint32(bs[110])
	if nfats < 1 || nfats > 2 || sectorShift < 9 || sectorShift > 12 || clusterShift > 25-sectorShift {
		return false
	}
	fatOff, fatLen := uint64(le32(bs[80:])), uint64(le32(bs[84:]))
	heapOff, count, root := uint64(le32(bs[88:])), uint64(le32(bs[92:])), uint64(le32(bs[96:]))
	fatsEnd := fatOff + fatLen*uint64(nfats)
	return fatOff >= 24 && fatsEnd <= heapOff && heapOff <= 1<<31 &&
		root >= 2 && root <= count+1
}
