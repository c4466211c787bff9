// Package luks2test helps tests of LUKS2 header handling: it rewrites the
// JSON metadata of both header copies of a device image and reseals their
// checksums, and it carries cryptsetup 2.6's header validation cases
// (tests/generators and tests/luks2-validation-test in its source) as
// mutations with the verdict cryptsetup gives. Unit tests check atrest's
// verdicts against them; the integration tests check that cryptsetup itself
// agrees.
package luks2test

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
)

const binSize = 4096

// Rewrite decodes the JSON metadata of img's primary copy, applies mutate,
// and writes the result into both copies, resealed with valid checksums.
func Rewrite(img []byte, mutate func(doc map[string]any)) error {
	doc, err := Metadata(img)
	if err != nil {
		return err
	}
	mutate(doc)
	text, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	return RewriteArea(img, func(area []byte) {
		clear(area)
		copy(area, text)
	})
}

// RewriteArea lets edit change the JSON area bytes of each copy, then
// reseals both copies.
func RewriteArea(img []byte, edit func(area []byte)) error {
	size, err := hdrSize(img)
	if err != nil {
		return err
	}
	for _, off := range []uint64{0, size} {
		edit(img[off+binSize : off+size])
		Reseal(img[off:off+size], nil)
	}
	return nil
}

// Reseal recomputes the checksum of one header copy (binary header plus
// JSON area), after letting editBin change the binary header. The hash is
// the one the copy's checksum_alg field names (sha1, sha224, sha256,
// sha384 or sha512), sha256 for any other name.
func Reseal(copyBytes []byte, editBin func(bin []byte)) {
	bin := copyBytes[:binSize]
	if editBin != nil {
		editBin(bin)
	}
	clear(bin[448:512])
	var h hash.Hash
	switch alg, _, _ := bytes.Cut(bin[72:104], []byte{0}); string(alg) {
	case "sha1":
		h = sha1.New()
	case "sha224":
		h = sha256.New224()
	case "sha384":
		h = sha512.New384()
	case "sha512":
		h = sha512.New()
	default:
		h = sha256.New()
	}
	h.Write(copyBytes)
	copy(bin[448:], h.Sum(nil))
}

// Metadata returns the primary copy's JSON metadata, numbers as json.Number.
func Metadata(img []byte) (map[string]any, error) {
	size, err := hdrSize(img)
	if err != nil {
		return nil, err
	}
	area := img[binSize:size]
	if i := bytes.IndexByte(area, 0); i >= 0 {
		area = area[:i]
	}
	dec := json.NewDecoder(bytes.NewReader(area))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("luks2test: %w", err)
	}
	return doc, nil
}

func hdrSize(img []byte) (uint64, error) {
	if len(img) < binSize || !bytes.Equal(img[:6], []byte("LUKS\xba\xbe")) {
		return 0, errors.New("luks2test: no LUKS2 primary header")
	}
	size := binary.BigEndian.Uint64(img[8:16])
	if size < 0x4000 || uint64(len(img)) < 2*size {
		return 0, errors.New("luks2test: bad header size")
	}
	return size, nil
}

// Obj walks doc along keys and returns the object there (nil if missing).
func Obj(doc map[string]any, keys ...string) map[string]any {
	cur := doc
	for _, k := range keys {
		next, _ := cur[k].(map[string]any)
		if next == nil {
			return nil
		}
		cur = next
	}
	return cur
}
