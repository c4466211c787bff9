package signature_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/blockdev/internal/devtest"
	"github.com/atrest/atrest/pkg/blockdev/overwrite"
	"github.com/atrest/atrest/pkg/blockdev/signature"
	"github.com/atrest/atrest/pkg/loop"
)

// toolCase makes one signature with the real tool on a loop device.
type toolCase struct {
	name       string
	size       int64
	sectorSize uint32
	make       func(t *testing.T, dev string)
	// want is "type@offset" for every magic atrest must report, with
	// "END-n" meaning n bytes before the end of the device.
	want []string
}

const mib = 1 << 20

func luksFormat(extra ...string) func(t *testing.T, dev string) {
	return func(t *testing.T, dev string) {
		key := filepath.Join(t.TempDir(), "key")
		if err := os.WriteFile(key, []byte("not a real secret"), 0o600); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"luksFormat", "-q", "--key-file", key, "--pbkdf-force-iterations", "1000"}, extra...)
		devtest.Run(t, "cryptsetup", append(args, dev)...)
	}
}

func run(name string, args ...string) func(t *testing.T, dev string) {
	return func(t *testing.T, dev string) {
		devtest.Run(t, name, append(args, dev)...)
	}
}

var toolCases = []toolCase{
	{name: "luks1", size: 32 * mib, make: luksFormat("--type", "luks1"),
		want: []string{"crypto_LUKS@0x0"}},
	{name: "luks2", size: 32 * mib, make: luksFormat("--type", "luks2", "--pbkdf", "pbkdf2"),
		want: []string{"crypto_LUKS@0x0", "crypto_LUKS@0x4000"}},
	{name: "luks2-256k-metadata", size: 32 * mib,
		make: luksFormat("--type", "luks2", "--pbkdf", "pbkdf2", "--luks2-metadata-size", "256k"),
		want: []string{"crypto_LUKS@0x0", "crypto_LUKS@0x40000"}},
	{name: "luks2-primary-lost", size: 32 * mib,
		make: func(t *testing.T, dev string) {
			luksFormat("--type", "luks2", "--pbkdf", "pbkdf2", "--luks2-metadata-size", "64k")(t, dev)
			devtest.WriteAt(t, dev, make([]byte, 4096), 0)
		},
		want: []string{"crypto_LUKS@0x10000"}},
	{name: "ext2", size: 32 * mib, make: run("mkfs.ext2", "-q", "-F"), want: []string{"ext2@0x438"}},
	{name: "ext3", size: 32 * mib, make: run("mkfs.ext3", "-q", "-F"), want: []string{"ext3@0x438"}},
	{name: "ext4", size: 32 * mib, make: run("mkfs.ext4", "-q", "-F"), want: []string{"ext4@0x438"}},
	{name: "xfs", size: 300 * mib, make: run("mkfs.xfs", "-q", "-f"), want: []string{"xfs@0x0"}},
	{name: "btrfs", size: 128 * mib, make: run("mkfs.btrfs", "-q", "-f"), want: []string{"btrfs@0x10040"}},
	{name: "swap", size: 32 * mib, make: run("mkswap"), want: []string{"swap@0xff6"}},
	{name: "vfat-fat16", size: 64 * mib, make: run("mkfs.vfat"),
		want: []string{"vfat@0x0", "vfat@0x36", "vfat@0x1fe"}},
	{name: "vfat-fat32", size: 64 * mib, make: run("mkfs.vfat", "-F", "32"),
		want: []string{"vfat@0x0", "vfat@0x52", "vfat@0x1fe"}},
	{name: "ntfs", size: 32 * mib, make: run("mkfs.ntfs", "-Q", "-F", "-q"),
		want: []string{"ntfs@0x3", "dos@0x1fe"}},
	{name: "exfat", size: 32 * mib, make: run("mkfs.exfat"), want: []string{"exfat@0x3", "dos@0x1fe"}},
	{name: "f2fs", size: 64 * mib, make: run("mkfs.f2fs", "-q", "-f"), want: []string{"f2fs@0x400"}},
	{name: "gpt", size: 32 * mib, make: run("sgdisk", "-o", "-n", "1:0:+8M"),
		want: []string{"gpt@0x200", "gpt@END-512", "PMBR@0x1fe"}},
	{name: "gpt-4k-sectors", size: 32 * mib, sectorSize: 4096, make: run("sgdisk", "-o", "-n", "1:0:+8M"),
		want: []string{"gpt@0x1000", "gpt@END-4096", "PMBR@0x1fe"}},
	{name: "mbr", size: 32 * mib,
		make: func(t *testing.T, dev string) {
			if out, err := devtest.RunIn(t, "label: dos\n,8M,L\n", "sfdisk", "-q", dev); err != nil {
				t.Fatalf("sfdisk: %v\n%s", err, out)
			}
		},
		want: []string{"dos@0x1fe"}},
	{name: "lvm2-pv", size: 32 * mib, make: run("pvcreate", "-q", "-y", "-ff"), want: []string{"LVM2_member@0x218"}},
	{name: "bcache", size: 32 * mib, make: run("make-bcache", "-B"), want: []string{"bcache@0x1018"}},
	{name: "iso9660", size: 32 * mib,
		make: func(t *testing.T, dev string) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "hello"), []byte("hello"), 0o644); err != nil {
				t.Fatal(err)
			}
			iso := filepath.Join(t.TempDir(), "x.iso")
			devtest.Run(t, "xorriso", "-as", "mkisofs", "-quiet", "-V", "ATREST", "-o", iso, dir)
			b, err := os.ReadFile(iso)
			if err != nil {
				t.Fatal(err)
			}
			devtest.WriteAt(t, dev, b, 0)
		},
		want: []string{"iso9660@0x8001"}},
}

func TestToolSignatures(t *testing.T) {
	for _, c := range toolCases {
		t.Run(c.name, func(t *testing.T) {
			dev := devtest.Attach(t, devtest.Image(t, c.size), loop.Options{SectorSize: c.sectorSize})
			c.make(t, dev.Path)
			checkDetectAndWipe(t, dev.Path, c.sectorSize, c.want)
		})
	}
}

// checkDetectAndWipe is the whole contract on one device: atrest reports
// exactly the expected magics, wipefs and blkid agree, Wipe erases exactly
// what `wipefs --all` erases (byte for byte) and nothing else, and
// afterwards neither atrest nor blkid nor wipefs finds anything.
func checkDetectAndWipe(t *testing.T, path string, sectorSize uint32, want []string) {
	t.Helper()
	ctx := context.Background()
	d, err := blockdev.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sigs, err := signature.Probe(ctx, f, d.Size, signature.Options{SectorSize: d.LogicalSectorSize})
	if err != nil {
		t.Fatal(err)
	}
	got := flatten(sigs)
	for i, w := range want {
		if n, ok := strings.CutPrefix(w[strings.Index(w, "@")+1:], "END-"); ok {
			back, _ := strconv.ParseInt(n, 10, 64)
			want[i] = fmt.Sprintf("%s@%#x", w[:strings.Index(w, "@")], d.Size-back)
		}
	}
	if !slices.Equal(got, sorted(want)) {
		t.Fatalf("atrest found %v, want %v\n%v", got, sorted(want), sigs)
	}
	if oracle := wipefsSignatures(t, path); !slices.Equal(got, oracle) {
		t.Fatalf("atrest found %v, wipefs --no-act finds %v", got, oracle)
	}
	checkBlkid(t, path, sigs)

	// The same device wiped by wipefs, as the reference for every byte.
	before := devtest.CopySparse(t, path)
	reference := devtest.CopySparse(t, path)
	ref := devtest.Attach(t, reference, loop.Options{SectorSize: sectorSize})
	devtest.Run(t, "wipefs", "--all", "--quiet", ref.Path)

	var reports []overwrite.Progress
	err = signature.Wipe(ctx, f, d.Size, sigs, signature.WipeOptions{
		SectorSize: d.LogicalSectorSize,
		Progress:   func(p overwrite.Progress) { reports = append(reports, p) },
	})
	if err != nil {
		t.Fatal(err)
	}
	var magicBytes int64
	for _, s := range sigs {
		for _, m := range s.Magics {
			magicBytes += int64(len(m.Bytes))
		}
	}
	if last := reports[len(reports)-1]; last.Done != magicBytes || last.Total != magicBytes {
		t.Fatalf("last progress %+v, want %d of %d bytes", last, magicBytes, magicBytes)
	}

	devtest.Diff(t, path, ref.Path, 10, func(off int64, x, y byte) {
		t.Errorf("offset %#x: atrest left %#02x, wipefs --all left %#02x", off, x, y)
	})
	devtest.Diff(t, before, path, 1000, func(off int64, x, y byte) {
		if !devtest.InMagic(sigs, off) {
			t.Errorf("offset %#x changed from %#02x to %#02x outside every magic", off, x, y)
		}
	})
	left, err := signature.Probe(ctx, f, d.Size, signature.Options{SectorSize: d.LogicalSectorSize})
	if err != nil || len(left) != 0 {
		t.Fatalf("after wipe atrest still finds %v (err %v)", left, err)
	}
	if oracle := wipefsSignatures(t, path); len(oracle) != 0 {
		t.Fatalf("after wipe wipefs still finds %v", oracle)
	}
	if out, err := devtest.RunStatus(t, "blkid", "-p", "-o", "export", path); devtest.ExitCode(err) != 2 {
		t.Fatalf("after wipe blkid -p exits %v, want 2 (nothing found):\n%s", err, out)
	}
}

func flatten(sigs []signature.Signature) []string {
	var out []string
	for _, s := range sigs {
		for _, m := range s.Magics {
			out = append(out, fmt.Sprintf("%s@%#x", s.Type, m.Offset))
		}
	}
	return sorted(out)
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// wipefsSignatures is what `wipefs --no-act --json` lists, as type@offset.
func wipefsSignatures(t *testing.T, path string) []string {
	t.Helper()
	out := devtest.Run(t, "wipefs", "--no-act", "--json", path)
	if strings.TrimSpace(out) == "" {
		return nil
	}
	var doc struct {
		Signatures []struct {
			Offset string `json:"offset"`
			Type   string `json:"type"`
		} `json:"signatures"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("wipefs --json: %v\n%s", err, out)
	}
	var got []string
	for _, s := range doc.Signatures {
		off, err := strconv.ParseInt(s.Offset, 0, 64)
		if err != nil {
			t.Fatalf("wipefs offset %q: %v", s.Offset, err)
		}
		got = append(got, fmt.Sprintf("%s@%#x", s.Type, off))
	}
	return sorted(got)
}

// checkBlkid compares `blkid -p -o export` (TYPE, PTTYPE and their UUIDs)
// with what atrest found.
func checkBlkid(t *testing.T, path string, sigs []signature.Signature) {
	t.Helper()
	out, err := devtest.RunStatus(t, "blkid", "-p", "-o", "export", path)
	if err != nil {
		t.Fatalf("blkid -p: %v\n%s", err, out)
	}
	kv := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = strings.ReplaceAll(v, `\ `, " ")
		}
	}
	for _, pair := range [][2]string{{"TYPE", "UUID"}, {"PTTYPE", "PTUUID"}} {
		typ, ok := kv[pair[0]]
		if !ok {
			continue
		}
		i := slices.IndexFunc(sigs, func(s signature.Signature) bool { return s.Type == typ })
		if i < 0 {
			t.Fatalf("blkid reports %s=%s, atrest found %v", pair[0], typ, sigs)
		}
		if uuid := kv[pair[1]]; sigs[i].UUID != "" && uuid != sigs[i].UUID {
			t.Fatalf("blkid reports %s=%s, atrest %q", pair[1], uuid, sigs[i].UUID)
		}
	}
	if kv["TYPE"] == "" && kv["PTTYPE"] == "" {
		t.Fatalf("blkid found no TYPE or PTTYPE:\n%s", out)
	}
}

func hex(n int64) string { return fmt.Sprintf("%#x", n) }

// A GPT made for 4096-byte sectors, looked at as a file: wipefs and blkid
// see only the protective MBR there, atrest finds both headers too, and
// after the wipe a 4Kn reader finds nothing.
func TestGPTFor4KSectorsInAnImageFile(t *testing.T) {
	img := devtest.Image(t, 32*mib)
	dev4k := devtest.Attach(t, img, loop.Options{SectorSize: 4096})
	devtest.Run(t, "sgdisk", "-o", "-n", "1:0:+8M", dev4k.Path)
	if err := dev4k.Detach(); err != nil {
		t.Fatal(err)
	}
	if got := wipefsSignatures(t, img); !slices.Equal(got, []string{"PMBR@0x1fe"}) {
		t.Fatalf("wipefs on the file finds %v; this test documents that it sees only the PMBR", got)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	sigs, err := signature.Probe(ctx, f, 32*mib, signature.Options{SectorSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PMBR@0x1fe", "gpt@0x1000", "gpt@" + hex(32*mib-4096)}
	if got := flatten(sigs); !slices.Equal(got, sorted(want)) {
		t.Fatalf("atrest finds %v, want %v", got, sorted(want))
	}
	if err := signature.Wipe(ctx, f, 32*mib, sigs, signature.WipeOptions{SectorSize: 512}); err != nil {
		t.Fatal(err)
	}
	again := devtest.Attach(t, img, loop.Options{SectorSize: 4096})
	if out, err := devtest.RunStatus(t, "blkid", "-p", again.Path); devtest.ExitCode(err) != 2 {
		t.Fatalf("blkid on a 4Kn loop device after the wipe: %v\n%s", err, out)
	}
}
