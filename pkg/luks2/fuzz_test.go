package luks2

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// fuzzDevice presents data as the start of a 20 MiB device (zeros after
// it), so that a fuzzed header is read with its keyslots area in place.
type fuzzDevice struct{ data []byte }

func (f fuzzDevice) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	if off < int64(len(f.data)) {
		copy(p, f.data[off:])
	}
	return len(p), nil
}

func (f fuzzDevice) Size() (int64, error) { return 20 << 20, nil }

// fuzzImage builds a device image from a fuzz input: a mode byte, the
// primary binary header's first 512 bytes, then the JSON text. Both copies
// carry that JSON; unless mode bit 0 is set their checksums are recomputed
// (so that mutations reach the JSON checks), and mode bit 1 damages the
// primary copy's JSON area.
func fuzzImage(in []byte) []byte {
	if len(in) < 1+512 {
		return in
	}
	mode, bin, text := in[0], in[1:513], in[513:]
	size := uint64(DefaultMetadataSize)
	if b := decodeBin(append(bin[:512:512], make([]byte, BinaryHeaderSize-512)...)); validMetadataSize(b.hdrSize) && b.hdrSize <= 64<<10 {
		size = b.hdrSize
	}
	img := make([]byte, 2*size)
	for i, off := range []uint64{0, size} {
		c := img[off : off+size]
		copy(c, bin)
		copy(c[BinaryHeaderSize:], text[:min(len(text), int(size)-BinaryHeaderSize)])
		if i == 1 {
			copy(c[0:6], magicSecondary)
			binary.BigEndian.PutUint64(c[256:264], size)
		}
		if mode&1 == 0 {
			sealBin(cString(c[72:104:104]), c[:BinaryHeaderSize], c[BinaryHeaderSize:])
		}
	}
	if mode&2 != 0 {
		img[BinaryHeaderSize] ^= 0x55
	}
	return img
}

func seedHeaders(f *testing.F) {
	paths, _ := filepath.Glob("testdata/cryptsetup-*.hdr.gz")
	if len(paths) == 0 {
		f.Fatal("no seed headers in testdata (scripts/luks2-fuzz-seeds.sh makes them)")
	}
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			f.Fatal(err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			f.Fatal(err)
		}
		text := b[min(len(b), BinaryHeaderSize):]
		if i := bytes.IndexByte(text, 0); i >= 0 {
			text = text[:i]
		}
		for _, mode := range []byte{0, 1, 2} {
			f.Add(append(append([]byte{mode}, b[:512]...), text...))
		}
	}
}

// FuzzRead feeds header copies to Read: it must never panic, and a header
// it accepts must survive a rewrite unchanged.
func FuzzRead(f *testing.F) {
	seedHeaders(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 64<<10 {
			return
		}
		data := fuzzImage(in)
		h, err := Read(context.Background(), fuzzDevice{data})
		if err != nil {
			return
		}
		h.ListKeyslots()
		h.Activation()
		for _, id := range h.TokenIDs() {
			if _, err := ParseToken(h.Tokens[id].JSON()); err != nil {
				t.Fatalf("token %d does not parse back: %v", id, err)
			}
		}
		copies, err := h.render(h.SeqID + 1)
		if err != nil {
			return // the rewrite would not fit; Commit reports it
		}
		img := make([]byte, 2*h.MetadataSize)
		for _, c := range copies {
			copy(img[c.offset:], c.bin)
			copy(img[c.offset+BinaryHeaderSize:], c.area)
		}
		h2, err := Read(context.Background(), fuzzDevice{img})
		if err != nil {
			t.Fatalf("rewritten header does not read back: %v", err)
		}
		if a, b := h.encodeJSON(), h2.encodeJSON(); !bytes.Equal(a, b) {
			t.Fatalf("rewrite changed the metadata:\n%s\n%s", a, b)
		}
	})
}
