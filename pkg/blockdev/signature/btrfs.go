package signature

// btrfs: the primary superblock at 64 KiB carries "_BHRfS_M" at offset
// 0x40. libblkid and wipefs look at the primary copy only (the mirrors at
// 64 MiB and 256 GiB are not used to find or mount a filesystem), and so do
// we.
const btrfsSuperOff = 0x10000

var btrfsMagic = []byte("_BHRfS_M")

func probeBtrfs(v *view) ([]Signature, error) {
	sb, err := v.read(btrfsSuperOff, 0x22b)
	if err != nil || sb == nil || string(sb[0x40:0x48]) != string(btrfsMagic) {
		return nil, err
	}
	if le32(sb[0x90:]) == 0 { // sectorsize; libblkid rejects 0
		return nil, nil
	}
	return []Signature{{
		Type:   "btrfs",
		Usage:  UsageFilesystem,
		UUID:   uuidString(sb[0x20:0x30]),
		Label:  cstr(sb[0x12b:0x22b]),
		Magics: []Magic{magicAt(btrfsSuperOff+0x40, sb[0x40:0x48], "")},
	}}, nil
}
