package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"github.com/atrest/atrest/internal/testutil/tokenedit"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms/backends"
	"github.com/atrest/atrest/pkg/token"
	"github.com/atrest/atrest/pkg/volume"
)

func TestEscapeText(t *testing.T) {
	for _, tc := range []struct{ in, keep, want string }{
		{"data1", "", "data1"},
		{"\x1b[2Jred", "", `\u001b[2Jred`},
		{"a\nb\tc\rd", "", `a\nb\tc\rd`},
		{"a\nb\tc", "\n\t", "a\nb\tc"},
		{"bell\a del\x7f c1\u009b", "", `bell\u0007 del\u007f c1\u009b`},
		{"evil\u202etxt.exe", "", `evil\u202etxt.exe`},
		{"bad\xffbyte", "", `bad\xffbyte`},
		{"naïve ü \ufffd", "", "naïve ü \ufffd"},
	} {
		if got := escapeText(tc.in, tc.keep); got != tc.want {
			t.Errorf("escapeText(%q, %q) = %q, want %q", tc.in, tc.keep, got, tc.want)
		}
	}
}

// Strings read from a header reach the terminal escaped: a token whose
// key name and recovery record hold escape sequences (clear screen, set
// the window title, ring the bell) prints as text in every form of status.
func TestStatusPrintsNoRawControlBytesFromAHeader(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "atrest.yaml")
	yaml := "kms: local\nlocal:\n  keystore: " + filepath.Join(dir, "kek") + "\nstate_dir: " + filepath.Join(dir, "state") + "\nrecovery:\n  mode: none\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	set, err := backends.Open(cfg, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	img := filepath.Join(dir, "vol.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 20<<20); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := volume.New(cfg, set, volume.WithRunDir(filepath.Join(dir, "run")))
	if _, err := m.Format(ctx, volume.FormatOptions{Device: img, Name: "esc"}); err != nil {
		t.Fatal(err)
	}
	tokenedit.EditToken(t, img, token.Type, func(b []byte) []byte {
		tok, err := token.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		tok.Key = "\x1b[2J\x1b]0;owned\a" + tok.Key
		tok.Recovery = "escrow:\x1b[31mred\u009b"
		data, err := tok.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return data
	})

	for _, args := range [][]string{{"status", img}, {"status", "--long", img}, {"rekey", img}} {
		var stdout, stderr bytes.Buffer
		Main(append([]string{"atrest", "-c", cfgPath}, args...), strings.NewReader(""), &stdout, &stderr)
		out := stdout.String() + stderr.String()
		if strings.ContainsFunc(out, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }) {
			t.Errorf("atrest %s printed raw control characters:\n%q", strings.Join(args, " "), out)
		}
		if !strings.Contains(out, `\u001b`) && !strings.Contains(out, `\x1b`) {
			t.Errorf("atrest %s does not show the escape as text:\n%s", strings.Join(args, " "), out)
		}
	}
}
