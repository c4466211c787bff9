package blockdev

import (
	"slices"
	"strings"
	"testing"
)

func TestParseMountinfo(t *testing.T) {
	in := `21 26 0:20 / /proc rw,relatime - proc proc rw
26 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 26 7:3 / /mnt/my\040data rw,relatime shared:40 master:2 - ext4 /dev/loop3 rw
91 26 0:55 / /srv rw - btrfs /dev/loop4 rw,space_cache=v2
`
	got, err := parseMountinfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []mount{
		{0, 20, "/proc", "proc", "proc"},
		{254, 0, "/", "ext4", "/dev/vda"},
		{7, 3, "/mnt/my data", "ext4", "/dev/loop3"},
		{0, 55, "/srv", "btrfs", "/dev/loop4"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"1 2 7:3 / /x rw ext4 /dev/loop3 rw\n", "1 2 x / /x rw - ext4 /dev/a rw\n", "1 2 7:3\n"} {
		if _, err := parseMountinfo(strings.NewReader(bad)); err == nil {
			t.Errorf("parsed malformed line %q", bad)
		}
	}
}

func TestParseSwaps(t *testing.T) {
	in := "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n" +
		"/dev/loop5                              partition\t32764\t\t0\t\t-2\n" +
		"/var/my\\040swap\\040(deleted)         file\t\t16380\t\t0\t\t-3\n"
	got, err := parseSwaps(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	// The kernel escapes the space d_path puts before "(deleted)".
	want := []string{"/dev/loop5", "/var/my swap"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestUnescapeOctal(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`: "/a b", `/tab\011`: "/tab\t", `/back\134slash`: `/back\slash`,
		`/plain`: "/plain", `/trailing\04`: `/trailing\04`, `/bad\999`: `/bad\999`,
	} {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
}
