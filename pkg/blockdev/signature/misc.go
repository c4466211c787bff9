package signature

import "fmt"

// bcache backing or cache device: a 16-byte magic at 4 KiB + 24 in a
// superblock that says it was written at sector 8.
var bcacheMagic = []byte("\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81")

const bcacheSuperOff = 0x1000

func probeBcache(v *view) ([]Signature, error) {
	sb, err := v.read(bcacheSuperOff, 104)
	if err != nil || sb == nil || string(sb[24:40]) != string(bcacheMagic) || le64(sb[8:]) != bcacheSuperOff/512 {
		return nil, err
	}
	return []Signature{{
		Type:    "bcache",
		Usage:   UsageOther,
		Version: fmt.Sprint(le64(sb[16:])),
		UUID:    uuidString(sb[40:56]),
		Label:   cstr(sb[72:104]),
		Magics:  []Magic{magicAt(bcacheSuperOff+24, sb[24:40], "")},
	}}, nil
}

// F2FS: magic 0xF2F52010 at 1 KiB (the first of its two superblocks, the
// one libblkid and wipefs use).
const (
	f2fsSuperOff = 0x400
	f2fsMagic    = 0xF2F52010
)

func probeF2FS(v *view) ([]Signature, error) {
	sb, err := v.read(f2fsSuperOff, 124)
	if err != nil || sb == nil || le32(sb) != f2fsMagic {
		return nil, err
	}
	return []Signature{{
		Type:    "f2fs",
		Usage:   UsageFilesystem,
		Version: fmt.Sprintf("%d.%d", le16(sb[4:]), le16(sb[6:])),
		UUID:    uuidString(sb[108:124]),
		Magics:  []Magic{magicAt(f2fsSuperOff, sb[:4], "")},
	}}, nil
}

// ISO 9660 (and High Sierra): "CD001" at 32 KiB + 1, or "CDROM" at
// 32 KiB + 9, in the first volume descriptor.
const isoDescOff = 0x8000

func probeISO9660(v *view) ([]Signature, error) {
	d, err := v.read(isoDescOff, 0x48)
	if err != nil || d == nil {
		return nil, err
	}
	switch {
	case string(d[1:6]) == "CD001":
		return []Signature{{Type: "iso9660", Usage: UsageFilesystem, Label: cstr(d[0x28:0x48]),
			Magics: []Magic{magicAt(isoDescOff+1, d[1:6], "")}}}, nil
	case string(d[9:14]) == "CDROM":
		return []Signature{{Type: "iso9660", Usage: UsageFilesystem, Version: "High Sierra",
			Magics: []Magic{magicAt(isoDescOff+9, d[9:14], "")}}}, nil
	}
	return nil, nil
}
