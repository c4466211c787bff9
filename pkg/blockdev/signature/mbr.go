package signature

import "fmt"

// The DOS/MBR partition table: the 0x55AA boot signature at 0x1fe of a
// sector whose four entries have valid boot indicators, that is not a
// protective MBR, and not the boot sector of a FAT, exFAT or NTFS
// filesystem (libblkid's probe_dos_pt). wipefs erases the two signature
// bytes; the kernel and every partitioning tool then see no table.
var aixMagic = []byte("\xC9\xC2\xD4\xC1")

func probeDOS(v *view) ([]Signature, error) {
	mbr, err := v.read(0, 512)
	if err != nil || mbr == nil || string(mbr[mbrSigOff:mbrSigOff+2]) != string(bootSignature) {
		return nil, err
	}
	if string(mbr[:4]) == string(aixMagic) {
		return nil, nil
	}
	empty := true
	for i := 0; i < mbrEntryCount; i++ {
		e := mbr[mbrTableOff+16*i : mbrTableOff+16*(i+1)]
		if (e[0] != 0 && e[0] != 0x80) || e[4] == mbrTypeGPT {
			return nil, nil
		}
		if le32(e[12:]) != 0 {
			empty = false
		}
	}
	for _, fs := range []prober{probeVFAT, probeExFAT, probeNTFS} {
		sigs, err := fs(v)
		if err != nil || len(sigs) > 0 {
			return nil, err
		}
	}
	if empty {
		lvm, err := probeLVM2(v)
		if err != nil || len(lvm) > 0 {
			return nil, err
		}
	}
	s := Signature{Type: "dos", Usage: UsagePartitionTable,
		Magics: []Magic{magicAt(mbrSigOff, mbr[mbrSigOff:mbrSigOff+2], "")}}
	if id := le32(mbr[440:]); id != 0 {
		s.UUID = fmt.Sprintf("%08x", id)
	}
	return []Signature{s}, nil
}
