package signature

import (
	"bytes"
	"context"
	"testing"
)

// FuzzProbe feeds arbitrary bytes to every probe. Beyond not panicking it
// checks what Wipe relies on: every reported magic lies inside the device
// and holds the bytes reported, and zeroing all of them leaves a device on
// which Probe finds nothing.
func FuzzProbe(f *testing.F) {
	// Seeds stay small (the md 0.90 and btrfs cases need more than 64 KiB
	// and live in TestProbeRules): the fuzzer minimises every new input,
	// and that costs time in proportion to its size.
	f.Add([]byte{})
	f.Add([]byte(newImage(0x4200).luks2(0, 0, "LUKS\xba\xbe").luks2(0x4000, 0x4000, "SKUL\xba\xbe")))
	f.Add([]byte(newImage(40*512).pmbr().gpt(1, 39, 2)))
	f.Add([]byte(newImage(1024).str(3, "NTFS    ").put(0x1fe, []byte{0x55, 0xAA})))
	f.Add([]byte(newImage(1024).str(0x36, "FAT16   ").byteAt(0, 0xEB).put(0x1fe, []byte{0x55, 0xAA}).
		le16(0x0b, 512).byteAt(0x0d, 4).le16(0x0e, 1).byteAt(0x10, 2).byteAt(0x15, 0xf8).le16(0x13, 8)))
	f.Add([]byte(newImage(2048).put(0x438, []byte{0x53, 0xEF})))
	f.Add([]byte(newImage(0x1200).str(0x200, "LABELONE").le64(0x208, 1).str(0x218, "LVM2 001").
		le32(0x1000, mdMagic).le32(0x1004, 1).le64(0x1000+144, 8)))
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		size := int64(len(data))
		sigs, err := Probe(ctx, bytes.NewReader(data), size, Options{SectorSize: 512})
		if err != nil {
			t.Fatalf("probe of in-memory bytes failed: %v", err)
		}
		wiped := bytes.Clone(data)
		for _, s := range sigs {
			if len(s.Magics) == 0 {
				t.Fatalf("%s reported without a magic", s.Type)
			}
			for _, m := range s.Magics {
				end := m.Offset + int64(len(m.Bytes))
				if m.Offset < 0 || end > size || len(m.Bytes) == 0 {
					t.Fatalf("%s magic at %d+%d outside %d bytes", s.Type, m.Offset, len(m.Bytes), size)
				}
				if !bytes.Equal(data[m.Offset:end], m.Bytes) {
					t.Fatalf("%s magic at %d reports %x, device holds %x", s.Type, m.Offset, m.Bytes, data[m.Offset:end])
				}
				clear(wiped[m.Offset:end])
			}
		}
		left, err := Probe(ctx, bytes.NewReader(wiped), size, Options{SectorSize: 512})
		if err != nil || len(left) != 0 {
			t.Fatalf("after zeroing every magic Probe finds %v (err %v); before: %v", left, err, sigs)
		}
	})
}
