package dmcrypt

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/secret"
)

// The overlay tables of a forward re-encryption of a 4096-byte-sector
// volume with its data at 32768 sectors (16 MiB), as cryptsetup 2.6 loads
// them (integration/vm/reencguest compares them with cryptsetup's live
// tables in the real-kernel tier).
func TestOverlayTable(t *testing.T) {
	old, _ := secret.Random(64)
	nw, _ := secret.Random(64)
	defer old.Wipe()
	defer nw.Wipe()
	const data, size = 32768, 98304
	seg := func(off, n uint64, k *secret.Key, id int, hot bool) ReencryptSegment {
		return ReencryptSegment{OffsetSectors: data + off, Sectors: n, IVOffset: off, SectorSize: 4096, Key: k, KeyID: id, Hotzone: hot}
	}
	ref := func(s ReencryptSegment) string { return fmt.Sprintf(":64:logon:cryptsetup:U-d%d", s.KeyID) }
	for _, tc := range []struct {
		name  string
		segs  []ReencryptSegment
		flags Flag
		want  []string
	}{
		{"first hotzone", []ReencryptSegment{seg(0, 2048, nw, 1, true), seg(2048, 0, old, 0, false)}, 0, []string{
			"0 2048 crypt aes-xts-plain64 :64:logon:cryptsetup:U-d1 0 253:1 0 1 sector_size:4096",
			"2048 96256 crypt aes-xts-plain64 :64:logon:cryptsetup:U-d0 2048 7:0 34816 1 sector_size:4096",
		}},
		{"done, hotzone, rest", []ReencryptSegment{seg(0, 4096, nw, 1, false), seg(4096, 2048, nw, 1, true), seg(6144, 0, old, 0, false)}, AllowDiscards, []string{
			"0 4096 crypt aes-xts-plain64 :64:logon:cryptsetup:U-d1 0 7:0 32768 2 allow_discards sector_size:4096",
			"4096 2048 crypt aes-xts-plain64 :64:logon:cryptsetup:U-d1 4096 253:1 4096 2 allow_discards sector_size:4096",
			"6144 92160 crypt aes-xts-plain64 :64:logon:cryptsetup:U-d0 6144 7:0 38912 2 allow_discards sector_size:4096",
		}},
		{"between hotzones", []ReencryptSegment{seg(0, 6144, nw, 1, false), seg(6144, 0, old, 0, false)}, 0, []string{
			"0 6144 crypt aes-xts-plain64 :64:logon:cryptsetup:U-d1 0 7:0 32768 1 sector_size:4096",
			"6144 92160 crypt aes-xts-plain64 :64:logon:cryptsetup:U-d0 6144 7:0 38912 1 sector_size:4096",
		}},
		{"finished", []ReencryptSegment{seg(0, 0, nw, 1, false)}, 0, []string{
			"0 98304 crypt aes-xts-plain64 :64:logon:cryptsetup:U-d1 0 7:0 32768 1 sector_size:4096",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines, err := OverlayTable(tc.segs, size, data, "7:0", "253:1", tc.flags, ref)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range lines {
				got = append(got, l.String())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("table:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
	// What cannot be a table is refused before the kernel sees it.
	for name, segs := range map[string][]ReencryptSegment{
		"gap at the end":        {seg(0, 4096, nw, 1, false)},
		"dynamic in the middle": {seg(0, 0, nw, 1, false), seg(4096, 0, old, 0, false)},
		"past the end":          {seg(0, size+8, nw, 1, false)},
	} {
		if _, err := OverlayTable(segs, size, data, "7:0", "253:1", 0, ref); !errors.Is(err, ErrInvalidParams) {
			t.Errorf("%s: %v, want ErrInvalidParams", name, err)
		}
	}
	if _, err := OverlayTable([]ReencryptSegment{seg(0, 0, nw, 1, true)}, size, data, "7:0", "", 0, ref); !errors.Is(err, ErrInvalidParams) {
		t.Errorf("a hotzone without a hotzone device: %v", err)
	}
}
