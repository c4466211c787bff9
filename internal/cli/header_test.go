package cli

import (
	"encoding/binary"
	"os"
	"testing"

	"github.com/atrest/atrest/pkg/luks2/luks2test"
)

// header check answers every input with an exit code, never a panic: a
// LUKS1 image, a missing path, an empty argument, and both copies valid but
// of different seqids (which status calls "needs repair").
func TestHeaderCheckExitCodes(t *testing.T) {
	n := newNode(t)
	luks1 := n.image("luks1.img", 4)
	f, err := os.OpenFile(luks1, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("LUKS\xba\xbe\x00\x01aes"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()

	outdated := n.volume("outdated")
	img, err := os.ReadFile(outdated)
	if err != nil {
		t.Fatal(err)
	}
	size := binary.BigEndian.Uint64(img[8:16])
	luks2test.Reseal(img[size:2*size], func(bin []byte) {
		binary.BigEndian.PutUint64(bin[16:], binary.BigEndian.Uint64(bin[16:])-1)
	})
	if err := os.WriteFile(outdated, img, 0o600); err != nil {
		t.Fatal(err)
	}
	n.expect(ExitOK, "header", "check", n.volume("fine"))

	for _, tc := range []struct {
		arg  string
		code int
	}{
		{luks1, ExitNotLUKS2},
		{n.dir + "/missing.img", ExitNotFound},
		{"/dev/null", ExitNotFound},
		{n.dir, ExitNotFound},
		{"", ExitUsage},
		{" ", ExitUsage},
		{"no-such-volume", ExitNotFound},
		{outdated, ExitAttention},
	} {
		t.Run(tc.arg, func(t *testing.T) {
			n.t = t
			r := n.expect(tc.code, "header", "check", tc.arg)
			if tc.code == ExitAttention {
				jr := n.run("", "-o", "json", "header", "check", tc.arg)
				if jr.code != ExitAttention || !jsonHas(t, jr.stdout, "needs_repair", true) {
					t.Fatalf("JSON form: %s", jr)
				}
				n.expect(ExitOK, "header", "check", "--repair", tc.arg)
				n.expect(ExitOK, "header", "check", tc.arg)
			}
			_ = r
		})
	}
}
