package signature

import "fmt"

// ext2/3/4: the superblock at 1024 with the magic 0xEF53 at 0x438. libblkid
// tells the versions apart by feature flags; we do the same, so the Type
// matches what blkid and mount call it. Backup superblocks are left alone,
// as wipefs does: with the primary magic gone nothing probes or mounts the
// filesystem by accident.
const (
	extSuperOff = 0x400
	extMagicOff = extSuperOff + 0x38

	extCompatHasJournal  = 0x0004
	extIncompatFiletype  = 0x0002
	extIncompatRecover   = 0x0004
	extIncompatJournalDv = 0x0008
	extIncompatMetaBG    = 0x0010
	extROCompatSupp      = 0x0001 | 0x0002 | 0x0004 // sparse_super, large_file, btree_dir
	extROCompatMetaCsum  = 0x0400
	extFlagsTestFS       = 0x0004
	ext2IncompatSupp     = extIncompatFiletype | extIncompatMetaBG
	ext3IncompatSupp     = extIncompatFiletype | extIncompatRecover | extIncompatMetaBG
)

func probeExt(v *view) ([]Signature, error) {
	sb, err := v.read(extSuperOff, 1024)
	if err != nil || sb == nil {
		return nil, err
	}
	if sb[0x38] != 0x53 || sb[0x39] != 0xEF {
		return nil, nil
	}
	fc, fi, frc := le32(sb[0x5c:]), le32(sb[0x60:]), le32(sb[0x64:])
	// Without metadata_csum libblkid sanity-checks the block size; with
	// it, it checks a checksum that wipefs mode accepts even when bad.
	if frc&extROCompatMetaCsum == 0 && le32(sb[0x18:]) >= 256 {
		return nil, nil
	}
	typ := extType(fc, fi, frc, le32(sb[0x160:]))
	s := Signature{
		Type:    typ,
		Usage:   UsageFilesystem,
		Version: fmt.Sprintf("%d.%d", le32(sb[0x4c:]), le16(sb[0x3e:])),
		UUID:    uuidString(sb[0x68:0x78]),
		Label:   cstr(sb[0x78:0x88]),
		Magics:  []Magic{magicAt(extMagicOff, sb[0x38:0x3a], "")},
	}
	if typ == "jbd" {
		s.Usage = UsageOther
	}
	return []Signature{s}, nil
}

// extType follows libblkid's probe_jbd/ext4dev/ext4/ext3/ext2.
func extType(fc, fi, frc, flags uint32) string {
	switch {
	case fi&extIncompatJournalDv != 0:
		return "jbd"
	case flags&extFlagsTestFS != 0:
		return "ext4dev"
	case frc&^extROCompatSupp != 0 || fi&^ext3IncompatSupp != 0:
		return "ext4"
	case fc&extCompatHasJournal != 0:
		return "ext3"
	case fi&^ext2IncompatSupp == 0:
		return "ext2"
	default:
		// needs_recovery without a journal: libblkid names nothing, but
		// the superblock is unmistakable.
		return "ext2"
	}
}
