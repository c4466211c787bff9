package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil/swtpmtest"
)

// formatWithKey formats name on n (recovery key printed) and writes the
// key to a file, as the operator keeps it.
func (n *node) formatWithKey(name string) (img, keyFile string) {
	n.t.Helper()
	img = n.image(name+".img", 20)
	var f struct{ Recovery struct{ Key string } }
	r := n.expect(ExitOK, "-o", "json", "format", img, "--name", name, "--recovery", "print")
	if err := json.Unmarshal([]byte(r.stdout), &f); err != nil || f.Recovery.Key == "" {
		n.t.Fatalf("format: %v: %s", err, r)
	}
	keyFile = filepath.Join(n.dir, name+".recovery")
	if err := os.WriteFile(keyFile, []byte(f.Recovery.Key+"\n"), 0o600); err != nil {
		n.t.Fatal(err)
	}
	return img, keyFile
}

// After a PCR change the kms: tpm KEK no longer unseals; atrest tpm
// reseal --kek with a volume's recovery key seals a new KEK (once: the old
// file kept) and gives that volume a new platform keyslot, then the next
// volume the same; a wrong recovery key changes nothing, and a volume
// that opens already is refused.
func TestTPMResealKEKWithRecoveryKey(t *testing.T) {
	sw := swtpmtest.Start(t)
	sw.ExtendPCR7(t)
	n := tpmNode(t, sw)
	a, ka := n.formatWithKey("kva")
	b, kb := n.formatWithKey("kvb")
	kek := filepath.Join(n.dir, "state", "tpm-kek.json")
	sw.ExtendPCR7(t)
	n.expect(ExitPCRMismatch, "open", "--test", a)

	wrong := filepath.Join(n.dir, "wrong")
	if err := os.WriteFile(wrong, []byte("cbdefghi-jklnrtuv-cbdefghi-jklnrtuv-cbdefghi-jklnrtuv-cbdefghi-jklnrtuv\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	img, kekBefore := sum(t, a), sum(t, kek)
	n.expect(ExitKeyRejected, "tpm", "reseal", a, "--kek", "--key-file", wrong)
	if sum(t, a) != img || sum(t, kek) != kekBefore {
		t.Fatal("a refused tpm reseal --kek changed the volume or the KEK file")
	}

	r := n.expect(ExitOK, "tpm", "reseal", a, "--kek", "--key-file", ka)
	if !strings.Contains(r.stderr, "old one kept as") || !strings.Contains(r.stdout, "kva: resealed, platform keyslot") {
		t.Fatalf("tpm reseal --kek: %s", r)
	}
	if d, r := (&tpmKeyslotNode{node: n}).openJSON(a); r.code != ExitOK || !slices.Equal(d.Volumes[0].By, []string{"tpm"}) {
		t.Fatalf("after tpm reseal --kek: %s", r)
	}
	n.expect(ExitPCRMismatch, "open", "--test", b) // still under the old KEK, which the changed PCR keeps sealed
	if r := n.expect(ExitOK, "tpm", "reseal", b, "--kek", "--key-file", kb); strings.Contains(r.stderr, "old one kept as") {
		t.Fatalf("the second volume sealed yet another KEK: %s", r)
	}
	n.expect(ExitOK, "open", "--test", b)
	n.expect(ExitUsage, "tpm", "reseal", a, "--kek", "--key-file", ka) // opens already
	if stale, _ := filepath.Glob(kek + ".stale-*"); len(stale) != 1 {
		t.Fatalf("stale KEK files: %v, want the one", stale)
	}
	if _, code := n.tpmStatus(a); code != ExitOK {
		t.Fatalf("status after the re-seal: exit %d", code)
	}
}
