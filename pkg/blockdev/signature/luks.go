package signature

import "fmt"

// LUKS: the primary header at 0 carries "LUKS\xba\xbe"; a LUKS2 secondary
// header carries "SKUL\xba\xbe" at one of the offsets cryptsetup allows for
// it (the primary's hdr_size). wipefs erases the 6-byte magic of both
// copies, and so do we: cryptsetup repair can rebuild a header from either.
var (
	luksMagic  = []byte("LUKS\xba\xbe")
	luks2Magic = []byte("SKUL\xba\xbe")
	// luks2SecondaryOffsets are cryptsetup's (and libblkid's) possible
	// secondary header offsets, 16 KiB to 4 MiB.
	luks2SecondaryOffsets = []int64{0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000}
)

const luksHeaderLen = 512 // the binary fields both versions share

func probeLUKS(v *view) ([]Signature, error) {
	var sig *Signature
	add := func(h []byte, off int64, role string) {
		if sig == nil {
			ver := be16(h[6:8])
			sig = &Signature{Type: "crypto_LUKS", Usage: UsageCrypto, Version: fmt.Sprint(ver), UUID: cstr(h[168:208])}
			if ver == 2 {
				sig.Label = cstr(h[24:72])
			}
		}
		sig.Magics = append(sig.Magics, magicAt(off, h[:6], role))
	}
	h, err := v.read(0, luksHeaderLen)
	if err != nil {
		return nil, err
	}
	if h != nil && luksValid(h, luksMagic, 0) {
		add(h, 0, "primary header")
	}
	for _, off := range luks2SecondaryOffsets {
		h, err := v.read(off, luksHeaderLen)
		if err != nil {
			return nil, err
		}
		if h != nil && luksValid(h, luks2Magic, off) {
			add(h, off, "secondary header")
		}
	}
	if sig == nil {
		return nil, nil
	}
	return []Signature{*sig}, nil
}

// luksValid is libblkid's test: the magic, and for LUKS2 a hdr_offset that
// matches where the header was found.
func luksValid(h, magic []byte, off int64) bool {
	if string(h[:6]) != string(magic) {
		return false
	}
	return be16(h[6:8]) != 2 || be64(h[256:264]) == uint64(off)
}
