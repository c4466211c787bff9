package luks2

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/luks2/kdf"
)

// The differential test: real headers (made by cryptsetup luksFormat and by
// atrest) are mutated in their JSON metadata, their JSON text and their
// binary fields, with checksums recomputed so that the mutations reach the
// checks behind them, and atrest's verdict (does Read accept the device?)
// is compared with `cryptsetup luksDump`'s. atrest must never accept what
// cryptsetup refuses, and must never panic. Where atrest is stricter (the
// differences docs/luks2.md lists), the cases are logged.
var (
	diffSeed  = flag.Uint64("luks2.diffseed", 10, "seed of the differential test's mutations")
	diffCases = flag.Int("luks2.diffcases", 400, "number of cases the differential test runs")
)

// diffPrefix is how much of each image the mutations touch and the test
// writes: both header copies of every base, with room to spare.
const diffPrefix = 128 << 10

type diffBase struct {
	name   string
	prefix []byte
	size   int64
}

func TestDifferentialAgainstCryptsetup(t *testing.T) {
	testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	bases := diffBases(t)
	foreign := foreignSignatures(t)
	dir := t.TempDir()
	for _, b := range bases {
		if ok, _, err := atrestVerdict(b.prefix, b.size); !ok {
			t.Fatalf("base %s: atrest refuses it: %v", b.name, err)
		}
		if ok, out := cryptsetupVerdict(t, dir, b.prefix, b.size); !ok {
			t.Fatalf("base %s: cryptsetup refuses it: %s", b.name, out)
		}
	}
	rng := rand.New(rand.NewPCG(*diffSeed, 0x6c756b7332))
	var bothOK, bothRefuse int
	var stricter []string
	for i := range *diffCases {
		b := bases[rng.IntN(len(bases))]
		img := slices.Clone(b.prefix)
		desc := b.name + ": " + mutateImage(rng, img, foreign)
		ok, panicked, err := atrestVerdict(img, b.size)
		if panicked != nil {
			t.Errorf("case %d (%s): atrest panics: %v", i, desc, panicked)
			continue
		}
		csOK, out := cryptsetupVerdict(t, dir, img, b.size)
		switch {
		case ok && !csOK:
			t.Errorf("case %d (%s): atrest accepts what cryptsetup refuses: %s", i, desc, out)
		case !ok && csOK:
			stricter = append(stricter, fmt.Sprintf("case %d (%s): %v", i, desc, err))
		case ok:
			bothOK++
		default:
			bothRefuse++
		}
	}
	t.Logf("%d cases (seed %d): both accept %d, both refuse %d, only cryptsetup accepts %d", *diffCases, *diffSeed, bothOK, bothRefuse, len(stricter))
	for _, s := range stricter {
		t.Log("atrest stricter: " + s)
	}
}

// atrestVerdict reads a device of size bytes starting with prefix and,
// when Read accepts it, uses the header the ways the CLI does.
func atrestVerdict(prefix []byte, size int64) (ok bool, panicked any, err error) {
	defer func() { panicked = recover() }()
	dev := newMemDevice(int(size))
	dev.WriteAt(prefix, 0)
	h, err := Read(context.Background(), dev)
	if err != nil {
		return false, nil, err
	}
	h.ListKeyslots()
	h.Activation()
	h.NeedsRepair()
	for _, id := range h.TokenIDs() {
		ParseToken(h.Tokens[id].JSON())
	}
	if u, err := h.Begin(); err == nil {
		u.SetLabel("x", "y")
		h.render(h.SeqID + 1)
	}
	return true, nil, nil
}

// cryptsetupVerdict asks `cryptsetup luksDump` about the same device (an
// image file). luksDump may repair the file: each case writes a new one.
func cryptsetupVerdict(t *testing.T, dir string, prefix []byte, size int64) (bool, string) {
	t.Helper()
	p := filepath.Join(dir, "case.img")
	os.Remove(p)
	if err := os.WriteFile(p, prefix, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cryptsetup", "luksDump", p)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("cryptsetup: %v", err)
	}
	return err == nil, strings.TrimSpace(string(out))
}

func runTool(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, append([]string{"--batch-mode"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// diffBases makes the headers to mutate: two by cryptsetup (PBKDF2 with
// two keyslots and a keyring token; Argon2id with 32 KiB metadata, a small
// keyslots area and an imported token) and one by atrest.
func diffBases(t *testing.T) []diffBase {
	dir := t.TempDir()
	k0 := filepath.Join(dir, "k0")
	k1 := filepath.Join(dir, "k1")
	os.WriteFile(k0, []byte("zero"), 0o600)
	os.WriteFile(k1, []byte("one"), 0o600)
	file := func(name string, size int64) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pb := file("pbkdf2.img", 20<<20)
	runTool(t, "cryptsetup", "luksFormat", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
		"--sector-size", "512", "--label", "lbl", "--subsystem", "sub", "--key-file", k0, pb)
	runTool(t, "cryptsetup", "luksAddKey", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", k0, pb, k1)
	runTool(t, "cryptsetup", "token", "add", "--key-description", "atrest-test", "--key-slot", "1", pb)

	ar := file("argon2.img", 6<<20)
	runTool(t, "cryptsetup", "luksFormat", "--type", "luks2", "--pbkdf", "argon2id", "--pbkdf-memory", "32",
		"--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1", "--luks2-metadata-size", "32k",
		"--luks2-keyslots-size", "2m", "--offset", "8192", "--key-file", k0, ar)
	tok := filepath.Join(dir, "token.json")
	os.WriteFile(tok, []byte(`{"type":"atrest","keyslots":["0"],"kms":"local","nested":{"a":[1,"b",null,true]}}`), 0o600)
	runTool(t, "cryptsetup", "token", "import", "--json-file", tok, ar)

	var bases []diffBase
	for _, p := range []string{pb, ar} {
		img, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		bases = append(bases, diffBase{name: filepath.Base(p), prefix: img[:diffPrefix], size: int64(len(img))})
	}

	dev, _, vk := formatted(t, FormatOptions{Label: "atrest", Flags: []string{FlagAllowDiscards}})
	_, u := mustUpdate(t, dev)
	if _, err := u.AddKeyslot(vk, pass(t, "second"), KeyslotOptions{Slot: 1, KDF: kdf.Params{Type: kdf.Argon2id, Time: 4, Memory: 32, CPUs: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := u.SetToken(0, []byte(tokenA)); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(context.Background(), dev); err != nil {
		t.Fatal(err)
	}
	return append(bases, diffBase{name: "atrest", prefix: dev.bytesOf()[:diffPrefix], size: dev.size})
}

// overlay is another program's signature: the bytes mkfs or mkswap wrote
// at off, to be written over the primary header area.
type overlay struct {
	name string
	off  int
	data []byte
}

// foreignSignatures makes filesystem and swap signatures with the real
// tools, where they are installed: cryptsetup (through libblkid) refuses a
// damaged primary beside one of them, and so must atrest.
func foreignSignatures(t *testing.T) []overlay {
	dir := t.TempDir()
	var out []overlay
	for _, f := range []struct {
		name     string
		args     []string
		off, end int
	}{
		{"ext4", []string{"mkfs.ext4", "-F", "-q"}, 1024, 2048},
		{"swap", []string{"mkswap"}, 1024, 4096},
		{"vfat", []string{"mkfs.vfat"}, 0, 512},
	} {
		if _, err := exec.LookPath(f.args[0]); err != nil {
			t.Logf("no %s: the differential test writes no %s signatures", f.args[0], f.name)
			continue
		}
		p := filepath.Join(dir, f.name+".img")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, 8<<20); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(f.args[0], append(f.args[1:], p)...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", f.args[0], err, out)
		}
		img, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, overlay{f.name, f.off, img[f.off:f.end]})
	}
	return out
}
