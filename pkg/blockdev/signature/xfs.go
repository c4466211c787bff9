package signature

// XFS: the superblock at 0 starts with "XFSB". The geometry checks are
// libblkid's xfs_verify_sb (minus the v5 CRC, which wipefs mode accepts
// even when bad); they keep four stray bytes from passing for a filesystem.
var xfsMagic = []byte("XFSB")

func probeXFS(v *view) ([]Signature, error) {
	sb, err := v.read(0, 128)
	if err != nil || sb == nil || string(sb[:4]) != string(xfsMagic) {
		return nil, err
	}
	blocksize := uint64(be32(sb[4:]))
	dblocks := be64(sb[8:])
	rextsize := uint64(be32(sb[80:]))
	agblocks := uint64(be32(sb[84:]))
	agcount := uint64(be32(sb[88:]))
	sectsize := uint64(be16(sb[102:]))
	inodesize := uint64(be16(sb[104:]))
	blocklog, sectlog, inodelog, inopblog := sb[120], sb[121], sb[122], sb[123]
	imaxPct := sb[127]
	ok := agcount > 0 &&
		sectsize >= 512 && sectsize <= 32768 && sectlog >= 9 && sectlog <= 15 && sectsize == 1<<sectlog &&
		blocksize >= 512 && blocksize <= 65536 && blocklog >= 9 && blocklog <= 16 && blocksize == 1<<blocklog &&
		inodesize >= 256 && inodesize <= 2048 && inodelog >= 8 && inodelog <= 11 && inodesize == 1<<inodelog &&
		int(blocklog)-int(inodelog) == int(inopblog) &&
		rextsize*blocksize <= 1<<30 && rextsize*blocksize >= 4096 &&
		imaxPct <= 100 &&
		dblocks != 0 && dblocks <= agcount*agblocks && dblocks >= (agcount-1)*agblocks+64
	if !ok {
		return nil, nil
	}
	return []Signature{{
		Type:   "xfs",
		Usage:  UsageFilesystem,
		UUID:   uuidString(sb[32:48]),
		Label:  cstr(sb[108:120]),
		Magics: []Magic{magicAt(0, sb[:4], "")},
	}}, nil
}
