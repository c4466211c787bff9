package signature

import "fmt"

// GPT: a header with "EFI PART" at LBA 1 and a backup at the last LBA; the
// protective MBR (0x55AA with a type 0xEE entry) in sector 0. The header
// checks are libblkid's get_gpt_header in wipefs mode (CRCs accepted even
// when wrong, no protective MBR required), at the device's logical sector
// size and at 512 and 4096 bytes.
var gptMagic = []byte("EFI PART")

const (
	gptHeaderMin  = 92
	gptEntrySize  = 128
	mbrTableOff   = 0x1be
	mbrSigOff     = 0x1fe
	mbrTypeGPT    = 0xEE
	mbrEntryCount = 4
)

func probeGPT(v *view) ([]Signature, error) {
	var out []Signature
	for _, ss := range v.sectorSizes {
		s, err := probeGPTAt(v, ss)
		if err != nil {
			return nil, err
		}
		if s != nil {
			out = append(out, *s)
		}
	}
	return out, nil
}

func probeGPTAt(v *view, ss int) (*Signature, error) {
	last := v.size/int64(ss) - 1
	if last < 2 {
		return nil, nil
	}
	var sig *Signature
	for _, c := range []struct {
		lba  int64
		role string
	}{{1, "primary header"}, {last, "backup header"}} {
		h, err := gptHeader(v, ss, c.lba, last)
		if err != nil {
			return nil, err
		}
		if h == nil {
			continue
		}
		if sig == nil {
			sig = &Signature{Type: "gpt", Usage: UsagePartitionTable, UUID: guidString(h[56:72])}
		}
		sig.Magics = append(sig.Magics, magicAt(c.lba*int64(ss), h[:8], c.role))
	}
	return sig, nil
}

// gptHeader returns the header sector at lba when it passes the checks, or
// nil.
func gptHeader(v *view, ss int, lba, last int64) ([]byte, error) {
	h, err := v.read(lba*int64(ss), ss)
	if err != nil || h == nil || string(h[:8]) != string(gptMagic) {
		return nil, err
	}
	hsz := uint64(le32(h[12:]))
	if hsz > uint64(ss) || hsz < gptHeaderMin || le64(h[24:]) != uint64(lba) {
		return nil, nil
	}
	fu, lu := le64(h[40:]), le64(h[48:])
	if lu < fu || fu > uint64(last) || lu > uint64(last) {
		return nil, nil
	}
	if fu < uint64(lba) && uint64(lba) < lu {
		return nil, nil
	}
	n, esz := uint64(le32(h[80:])), uint64(le32(h[84:]))
	if esz != gptEntrySize || n == 0 || n*esz >= 1<<32-1 {
		return nil, nil
	}
	// The entry array must be on the device for libblkid to accept it.
	start := le64(h[72:])
	if start > uint64(last) || n*esz > uint64(v.size)-start*uint64(ss) {
		return nil, nil
	}
	return h, nil
}

// probePMBR reports a protective MBR that has no GPT header left behind it
// (libblkid's "PMBR"): with the headers visible it belongs to the GPT and
// is reported once they are hidden.
func probePMBR(v *view) ([]Signature, error) {
	mbr, err := v.read(0, 512)
	if err != nil || mbr == nil || !hasPMBR(mbr) {
		return nil, err
	}
	for _, ss := range v.sectorSizes {
		last := v.size/int64(ss) - 1
		if last < 2 {
			continue
		}
		for _, lba := range []int64{1, last} {
			h, err := gptHeader(v, ss, lba, last)
			if err != nil {
				return nil, err
			}
			if h != nil {
				return nil, nil
			}
		}
	}
	return []Signature{{Type: "PMBR", Usage: UsagePartitionTable,
		Magics: []Magic{magicAt(mbrSigOff, mbr[mbrSigOff:mbrSigOff+2], "")}}}, nil
}

func hasPMBR(mbr []byte) bool {
	if string(mbr[mbrSigOff:mbrSigOff+2]) != string(bootSignature) {
		return false
	}
	for i := 0; i < mbrEntryCount; i++ {
		if mbr[mbrTableOff+16*i+4] == mbrTypeGPT {
			return true
		}
	}
	return false
}

// guidString formats an on-disk (mixed-endian) GUID.
func guidString(b []byte) string {
	if allZero(b) {
		return ""
	}
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", le32(b[0:]), le16(b[4:]), le16(b[6:]), b[8:10], b[10:16])
}
