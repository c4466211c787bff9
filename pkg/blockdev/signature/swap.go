package signature

// Linux swap (and the hibernation images written into a swap area): the
// magic is the last 10 bytes of the first page, for page sizes 4 KiB to
// 64 KiB, as in libblkid's swap and swsuspend probes.
var (
	swapPageSizes = []int64{0x1000, 0x2000, 0x4000, 0x8000, 0x10000}
	swapMagics    = []struct {
		magic, typ, version string
	}{
		{"SWAPSPACE2", "swap", "1"},
		{"SWAP-SPACE", "swap", "0"},
		{"S1SUSPEND", "swsuspend", "s1suspend"},
		{"S2SUSPEND", "swsuspend", "s2suspend"},
		{"ULSUSPEND", "swsuspend", "ulsuspend"},
		{"LINHIB0001", "swsuspend", "linhib0001"},
	}
	// tuxOnIceMagic at 0 marks a TuxOnIce image, not a swap area.
	tuxOnIceMagic = []byte("\xed\xc3\x02\xe9\x98\x56\xe5\x0c")
)

func probeSwap(v *view) ([]Signature, error) {
	head, err := v.read(0, 1024+128+4*34)
	if err != nil || head == nil {
		return nil, err
	}
	tuxOnIce := string(head[:8]) == string(tuxOnIceMagic)
	var out []Signature
	byType := map[string]int{}
	for _, page := range swapPageSizes {
		for _, m := range swapMagics {
			off := page - 10
			ok, err := v.has(off, []byte(m.magic))
			if err != nil {
				return nil, err
			}
			if !ok || (m.typ == "swap" && tuxOnIce) {
				continue
			}
			hdr := head[1024:]
			if m.version == "1" {
				ver := le32(hdr[0:])
				if (ver != 1 && be32(hdr[0:]) != 1) || le32(hdr[4:]) == 0 {
					continue
				}
			}
			i, seen := byType[m.typ]
			if !seen {
				s := Signature{Type: m.typ, Usage: UsageOther, Version: m.version}
				if m.version != "0" && allZero(hdr[44+128:44+136]) {
					s.UUID = uuidString(hdr[12:28])
					s.Label = cstr(hdr[28:44])
				}
				out = append(out, s)
				i = len(out) - 1
				byType[m.typ] = i
			}
			out[i].Magics = append(out[i].Magics, magicAt(off, []byte(m.magic), ""))
		}
	}
	if tuxOnIce {
		out = append(out, Signature{Type: "swsuspend", Usage: UsageOther, Version: "tuxonice",
			Magics: []Magic{magicAt(0, head[:8], "")}})
	}
	return out, nil
}
