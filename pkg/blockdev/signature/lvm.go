package signature

// LVM2 physical volume: a "LABELONE" label in one of the first four
// sectors whose sector field matches where it is, with "LVM2 001" at
// offset 0x18 of the label. wipefs erases those eight type bytes, which is
// what pvs and libblkid look for.
var (
	lvmLabel = []byte("LABELONE")
	lvmType  = []byte("LVM2 001")
)

func probeLVM2(v *view) ([]Signature, error) {
	var sig *Signature
	for sector := int64(0); sector < 4; sector++ {
		l, err := v.read(sector*512, 512)
		if err != nil {
			return nil, err
		}
		if l == nil || string(l[:8]) != string(lvmLabel) || le64(l[8:]) != uint64(sector) ||
			string(l[0x18:0x20]) != string(lvmType) {
			continue
		}
		if sig == nil {
			sig = &Signature{Type: "LVM2_member", Usage: UsageRAID, Version: string(lvmType), UUID: lvmUUID(l[0x20:0x40])}
		}
		sig.Magics = append(sig.Magics, magicAt(sector*512+0x18, l[0x18:0x20], ""))
	}
	if sig == nil {
		return nil, nil
	}
	return []Signature{*sig}, nil
}

// lvmUUID dashes the 32-character PV id the way LVM prints it (6-4-4-4-4-4-6).
func lvmUUID(id []byte) string {
	var out []byte
	for i, c := range id {
		if (1<<uint(i))&0x4444440 != 0 {
			out = append(out, '-')
		}
		out = append(out, c)
	}
	return cstr(out)
}
