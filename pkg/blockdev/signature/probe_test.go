package signature

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
)

// image builds a synthetic device in memory.
type image []byte

func newImage(size int) image { return make(image, size) }

func (im image) put(off int, b []byte) image  { copy(im[off:], b); return im }
func (im image) str(off int, s string) image  { return im.put(off, []byte(s)) }
func (im image) le32(off int, v uint32) image { binary.LittleEndian.PutUint32(im[off:], v); return im }
func (im image) be32(off int, v uint32) image { binary.BigEndian.PutUint32(im[off:], v); return im }
func (im image) le64(off int, v uint64) image { binary.LittleEndian.PutUint64(im[off:], v); return im }
func (im image) be16(off int, v uint16) image { binary.BigEndian.PutUint16(im[off:], v); return im }
func (im image) be64(off int, v uint64) image { binary.BigEndian.PutUint64(im[off:], v); return im }
func (im image) le16(off int, v uint16) image { binary.LittleEndian.PutUint16(im[off:], v); return im }
func (im image) byteAt(off int, v byte) image { im[off] = v; return im }
func (im image) luks2(off int, hdrOff uint64, magic string) image {
	return im.str(off, magic).be16(off+6, 2).be64(off+256, hdrOff)
}

// gptHeader writes a minimal GPT header at lba (512-byte sectors) for a
// disk of last LBA last.
func (im image) gpt(lba, last uint64, entriesLBA uint64) image {
	off := int(lba * 512)
	return im.str(off, "EFI PART").le32(off+12, 92).le64(off+24, lba).
		le64(off+40, 34).le64(off+48, last-33).le64(off+72, entriesLBA).
		le32(off+80, 128).le32(off+84, 128)
}

func (im image) pmbr() image {
	return im.byteAt(0x1be+4, 0xEE).put(0x1fe, []byte{0x55, 0xAA})
}

func found(t *testing.T, im image) []string {
	t.Helper()
	sigs, err := Probe(context.Background(), bytes.NewReader(im), int64(len(im)), Options{SectorSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range sigs {
		for _, m := range s.Magics {
			out = append(out, fmt.Sprintf("%s@%#x", s.Type, m.Offset))
		}
	}
	slices.Sort(out)
	return out
}

// TestProbeRules pins the libblkid rules that decide, byte by byte, what
// counts as a signature. Real tools make the common cases in
// tools_test.go; these are the edges they do not produce.
func TestProbeRules(t *testing.T) {
	const disk = 1 << 20
	md0 := func(u32 func(image, int, uint32) image) image {
		off := disk - 0x10000
		im := newImage(disk)
		im = u32(im, off, mdMagic)
		im = u32(im, off+4, 0)
		im = u32(im, off+8, 90)
		return u32(im, off+32, 64) // 64 KiB array size
	}
	for _, c := range []struct {
		name string
		im   image
		want []string
	}{
		{"zeros", newImage(disk), nil},
		{"luks2 both headers", newImage(disk).luks2(0, 0, "LUKS\xba\xbe").luks2(0x4000, 0x4000, "SKUL\xba\xbe"),
			[]string{"crypto_LUKS@0x0", "crypto_LUKS@0x4000"}},
		{"luks2 primary naming another offset", newImage(disk).luks2(0, 0x1000, "LUKS\xba\xbe"), nil},
		{"luks2 secondary at an offset it does not name", newImage(disk).luks2(0x8000, 0x4000, "SKUL\xba\xbe"), nil},
		{"luks2 secondary at 4 MiB", newImage(8<<20).luks2(0x400000, 0x400000, "SKUL\xba\xbe"), []string{"crypto_LUKS@0x400000"}},
		{"luks1 header", newImage(disk).str(0, "LUKS\xba\xbe").be16(6, 1), []string{"crypto_LUKS@0x0"}},
		{"swap v1 without last page", newImage(disk).str(0xff6, "SWAPSPACE2").le32(1024, 1), nil},
		{"swap v1", newImage(disk).str(0xff6, "SWAPSPACE2").le32(1024, 1).le32(1028, 100), []string{"swap@0xff6"}},
		{"swap on 64 KiB pages", newImage(disk).str(0xfff6, "SWAPSPACE2").le32(1024, 1).le32(1028, 100), []string{"swap@0xfff6"}},
		// TuxOnIce hides the swap signature from libblkid; once its magic
		// is hidden (or erased) the swap shows, so both are reported.
		{"TuxOnIce image over swap", newImage(disk).str(0, string(tuxOnIceMagic)).str(0xff6, "SWAPSPACE2").le32(1024, 1).le32(1028, 9),
			[]string{"swap@0xff6", "swsuspend@0x0"}},
		{"hibernation image", newImage(disk).str(0xff6, "S1SUSPEND"), []string{"swsuspend@0xff6"}},
		{"md 0.90 little-endian", md0(image.le32), []string{fmt.Sprintf("linux_raid_member@%#x", disk-0x10000)}},
		{"md 0.90 big-endian", md0(image.be32), []string{fmt.Sprintf("linux_raid_member@%#x", disk-0x10000)}},
		{"md 1.2 naming another offset", newImage(disk).le32(0x1000, mdMagic).le32(0x1004, 1).le64(0x1000+144, 0), nil},
		{"md 1.2", newImage(disk).le32(0x1000, mdMagic).le32(0x1004, 1).le64(0x1000+144, 8), []string{"linux_raid_member@0x1000"}},
		{"gpt backup only, protective MBR", newImage(disk).pmbr().gpt(disk/512-1, disk/512-1, disk/512-33),
			[]string{"PMBR@0x1fe", fmt.Sprintf("gpt@%#x", disk-512)}},
		{"gpt without protective MBR", newImage(disk).gpt(1, disk/512-1, 2), []string{"gpt@0x200"}},
		{"gpt header not at its own LBA", newImage(disk).gpt(1, disk/512-1, 2).le64(0x200+24, 7), nil},
		{"protective MBR alone", newImage(disk).pmbr(), []string{"PMBR@0x1fe"}},
		{"mbr", newImage(disk).put(0x1fe, []byte{0x55, 0xAA}).byteAt(0x1be, 0x80).le32(0x1be+12, 100), []string{"dos@0x1fe"}},
		{"mbr with a bad boot indicator", newImage(disk).put(0x1fe, []byte{0x55, 0xAA}).byteAt(0x1be, 0x12), nil},
		{"AIX boot record", newImage(disk).str(0, string(aixMagic)).put(0x1fe, []byte{0x55, 0xAA}), nil},
		{"lvm2 label in sector 1", newImage(disk).str(0x200, "LABELONE").le64(0x208, 1).str(0x218, "LVM2 001"), []string{"LVM2_member@0x218"}},
		{"lvm2 label naming another sector", newImage(disk).str(0x200, "LABELONE").le64(0x208, 0).str(0x218, "LVM2 001"), nil},
		{"btrfs with zero sector size", newImage(disk).str(0x10040, "_BHRfS_M"), nil},
		{"iso9660", newImage(disk).str(0x8001, "CD001"), []string{"iso9660@0x8001"}},
		{"High Sierra", newImage(disk).str(0x8009, "CDROM"), []string{"iso9660@0x8009"}},
		{"xfs magic alone", newImage(disk).str(0, "XFSB"), nil},
		{"ext magic with absurd block size", newImage(disk).put(0x438, []byte{0x53, 0xEF}).le32(0x418, 300), nil},
		{"ext2", newImage(disk).put(0x438, []byte{0x53, 0xEF}), []string{"ext2@0x438"}},
		{"ext4 on a 3 KiB device", newImage(3072).put(0x438, []byte{0x53, 0xEF}), []string{"ext2@0x438"}},
		{"ext superblock past the end", newImage(2000).put(0x438, []byte{0x53, 0xEF}), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := found(t, c.im); !slices.Equal(got, c.want) {
				t.Fatalf("found %v, want %v", got, c.want)
			}
		})
	}
}

func TestExtTypes(t *testing.T) {
	for _, c := range []struct {
		fc, fi, frc, flags uint32
		want               string
	}{
		{0, 0, 0, 0, "ext2"},
		{extCompatHasJournal, extIncompatFiletype, 0, 0, "ext3"},
		{extCompatHasJournal, 0x0040 /* extents */, 0, 0, "ext4"},
		{0, 0, 0x0008 /* huge_file */, 0, "ext4"},
		{extCompatHasJournal, 0, 0, extFlagsTestFS, "ext4dev"},
		{0, extIncompatJournalDv, 0, 0, "jbd"},
	} {
		if got := extType(c.fc, c.fi, c.frc, c.flags); got != c.want {
			t.Errorf("extType(%#x, %#x, %#x, %#x) = %s, want %s", c.fc, c.fi, c.frc, c.flags, got, c.want)
		}
	}
}

func TestSignatureString(t *testing.T) {
	s := Signature{Type: "crypto_LUKS", Usage: UsageCrypto, Version: "2", UUID: "4dbf",
		Magics: []Magic{{Offset: 0, Role: "primary header"}, {Offset: 0x4000, Role: "secondary header"}}}
	want := "crypto_LUKS version 2 (UUID 4dbf) at 0x0 (primary header), 0x4000 (secondary header)"
	if got := s.String(); got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	pt := Signature{Type: "dos", Usage: UsagePartitionTable, UUID: "6115d82a", Magics: []Magic{{Offset: 0x1fe}}}
	if got, want := pt.String(), "dos partition table (UUID 6115d82a) at 0x1fe"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
