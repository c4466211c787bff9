package luks2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/atrest/atrest/pkg/luks2/luks2test"
)

// The mutations of TestDifferentialAgainstCryptsetup: JSON values and
// text, binary header fields and foreign signatures, with the checksums
// recomputed.

// mutateImage applies one to three mutations to img and describes them.
func mutateImage(r *rand.Rand, img []byte, foreign []overlay) string {
	size := binary.BigEndian.Uint64(img[8:16])
	var desc []string
	for range 1 + r.IntN(3) {
		switch k := r.IntN(12); {
		case k < 5:
			desc = append(desc, mutateMetadata(r, img, size))
		case k < 7:
			desc = append(desc, mutateText(r, img, size))
		case k < 11 || len(foreign) == 0:
			desc = append(desc, mutateBinary(r, img, size))
		default:
			o := foreign[r.IntN(len(foreign))]
			copy(img[o.off:], o.data)
			desc = append(desc, o.name+" signature over the primary")
		}
	}
	return strings.Join(desc, "; ")
}

// targets picks the copies a mutation changes: usually both, sometimes
// only one (the other then decides, or the sequence ids do).
func targets(r *rand.Rand, img []byte, size uint64) (string, [][]byte) {
	p, s := img[:size], img[size:2*size]
	switch r.IntN(4) {
	case 2:
		return "primary", [][]byte{p}
	case 3:
		return "secondary", [][]byte{s}
	}
	return "both", [][]byte{p, s}
}

func jsonText(copyBytes []byte) []byte {
	area := copyBytes[BinaryHeaderSize:]
	if i := bytes.IndexByte(area, 0); i >= 0 {
		area = area[:i]
	}
	return area
}

func setText(copyBytes, text []byte) {
	area := copyBytes[BinaryHeaderSize:]
	clear(area)
	copy(area, text)
	luks2test.Reseal(copyBytes, nil)
}

// mutateMetadata changes one value of the JSON metadata.
func mutateMetadata(r *rand.Rand, img []byte, size uint64) string {
	which, copies := targets(r, img, size)
	dec := json.NewDecoder(bytes.NewReader(jsonText(copies[0])))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return "json " + which + " (unparsable, left alone)"
	}
	desc := mutateDoc(r, doc)
	text, err := json.Marshal(doc)
	if err != nil || uint64(len(text)) >= size-BinaryHeaderSize {
		return desc + " (does not fit, left alone)"
	}
	for _, c := range copies {
		setText(c, text)
	}
	return "json " + which + ": " + desc
}

type jsonLoc struct {
	parent any // map[string]any or []any
	key    string
	idx    int
	path   string
}

func (l jsonLoc) get() any {
	if m, ok := l.parent.(map[string]any); ok {
		return m[l.key]
	}
	return l.parent.([]any)[l.idx]
}

func (l jsonLoc) set(v any) {
	if m, ok := l.parent.(map[string]any); ok {
		m[l.key] = v
	} else {
		l.parent.([]any)[l.idx] = v
	}
}

func walkJSON(v any, path string, out *[]jsonLoc) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := path + "." + k
			*out = append(*out, jsonLoc{parent: x, key: k, path: p})
			walkJSON(x[k], p, out)
		}
	case []any:
		for i := range x {
			p := fmt.Sprintf("%s[%d]", path, i)
			*out = append(*out, jsonLoc{parent: x, idx: i, path: p})
			walkJSON(x[i], p, out)
		}
	}
}

var palette = []any{
	json.Number("0"), json.Number("1"), json.Number("-1"), json.Number("512"), json.Number("4294967296"),
	json.Number("18446744073709551616"), json.Number("1.5"), json.Number("1e3"),
	"", "0", "1", "-1", "512", "4096", "18446744073709551615", "18446744073709551616", "dynamic",
	"aes-xts-plain64", "aes-cbc-essiv:sha256", "sha256", "sha1", "luks2", "luks1", "pbkdf2", "argon2id", "argon2i",
	"raw", "crypt", "linear", "x", "a\u0000b", "\u00e9", "AAAA", "=",
	true, false, nil, map[string]any{}, []any{}, []any{"0"}, []any{json.Number("0")}, []any{"0", "0"},
}

var keyPalette = []string{"0", "1", "2", "7", "31", "32", "00", "-1", "a", "", "x-added", "type"}

// mutateDoc changes one place of doc and describes it.
func mutateDoc(r *rand.Rand, doc map[string]any) string {
	var locs []jsonLoc
	walkJSON(doc, "", &locs)
	l := locs[r.IntN(len(locs))]
	switch r.IntN(7) {
	case 0:
		if m, ok := l.parent.(map[string]any); ok {
			delete(m, l.key)
			return "delete " + l.path
		}
		l.set(nil)
		return "null " + l.path
	case 1:
		v := palette[r.IntN(len(palette))]
		l.set(v)
		return fmt.Sprintf("set %s = %#v", l.path, v)
	case 2:
		v := perturb(r, l.get())
		l.set(v)
		return fmt.Sprintf("perturb %s = %#v", l.path, v)
	case 3:
		m, ok := l.parent.(map[string]any)
		if !ok {
			return "rename (array) " + l.path
		}
		k := keyPalette[r.IntN(len(keyPalette))]
		v := m[l.key]
		delete(m, l.key)
		m[k] = v
		return fmt.Sprintf("rename %s to %q", l.path, k)
	case 4:
		v := deepCopy(l.get())
		if m, ok := l.parent.(map[string]any); ok {
			k := keyPalette[r.IntN(len(keyPalette))]
			m[k] = v
			return fmt.Sprintf("copy %s to key %q", l.path, k)
		}
		return "copy (array) " + l.path
	case 5:
		m, ok := l.get().(map[string]any)
		if !ok {
			m = doc
		}
		v := palette[r.IntN(len(palette))]
		m["x-added"] = v
		return fmt.Sprintf("add field x-added = %#v at %s", v, l.path)
	default:
		depth := 28 + r.IntN(8)
		var v any = json.Number("1")
		for range depth {
			v = []any{v}
		}
		l.set(v)
		return fmt.Sprintf("nest %s %d deep", l.path, depth)
	}
}

func perturb(r *rand.Rand, v any) any {
	switch x := v.(type) {
	case string:
		if n, err := strconv.ParseUint(x, 10, 64); err == nil {
			ns := []uint64{n + 1, n - 1, n + 512, n - 512, n + 4096, n * 2, n / 2, 0, ^uint64(0)}
			return strconv.FormatUint(ns[r.IntN(len(ns))], 10)
		}
		switch r.IntN(5) {
		case 0:
			return ""
		case 1:
			return x + "x"
		case 2:
			if len(x) > 0 {
				return x[:len(x)-1]
			}
			return "x"
		case 3:
			return strings.ToUpper(x)
		default:
			return " " + x
		}
	case json.Number:
		if n, err := x.Int64(); err == nil {
			ns := []int64{n + 1, n - 1, 0, -n, n * 1000, n * (1 << 32)}
			return json.Number(strconv.FormatInt(ns[r.IntN(len(ns))], 10))
		}
		return json.Number("0")
	case bool:
		return !x
	}
	return palette[r.IntN(len(palette))]
}

func deepCopy(v any) any {
	b, _ := json.Marshal(v)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out any
	dec.Decode(&out)
	return out
}

// mutateText edits the JSON text itself: one character replaced, deleted
// or inserted, or the framing after it changed.
func mutateText(r *rand.Rand, img []byte, size uint64) string {
	which, copies := targets(r, img, size)
	text := slices.Clone(jsonText(copies[0]))
	const chars = "{}[]\",:0123456789 \n\tax\\-.eE/'"
	pos := r.IntN(len(text) + 1)
	c := chars[r.IntN(len(chars))]
	var desc string
	switch r.IntN(5) {
	case 0:
		if pos < len(text) {
			text[pos] = c
		}
		desc = fmt.Sprintf("replace byte %d with %q", pos, c)
	case 1:
		if pos < len(text) {
			text = slices.Delete(text, pos, pos+1)
		}
		desc = fmt.Sprintf("delete byte %d", pos)
	case 2:
		text = slices.Insert(text, pos, c)
		desc = fmt.Sprintf("insert %q at %d", c, pos)
	case 3:
		text = append(text, []byte(" \n\t\r\x00x")[r.IntN(6)])
		desc = fmt.Sprintf("append %q", text[len(text)-1])
	default:
		text = append(text, ",{}"[r.IntN(3)])
		desc = fmt.Sprintf("append %q", text[len(text)-1])
	}
	if uint64(len(text)) > size-BinaryHeaderSize {
		return "text " + which + " (does not fit)"
	}
	for _, cp := range copies {
		setText(cp, text)
	}
	return "text " + which + ": " + desc
}

// mutateBinary changes one field of the binary header and reseals it
// (except when the mutation is of the checksum itself).
func mutateBinary(r *rand.Rand, img []byte, size uint64) string {
	which, copies := targets(r, img, size)
	op := r.IntN(12)
	pick := r.Uint64()
	var desc string
	for _, cp := range copies {
		bin := cp[:BinaryHeaderSize]
		switch op {
		case 0:
			i := int(pick % 6)
			bin[i] ^= 1 << (pick / 6 % 8)
			desc = fmt.Sprintf("magic byte %d", i)
		case 1:
			v := []uint16{0, 1, 3, 0xffff}[pick%4]
			binary.BigEndian.PutUint16(bin[6:], v)
			desc = fmt.Sprintf("version %d", v)
		case 2:
			v := []uint64{0, 4096, size + 1, size * 2, size / 2, 0x400000, 0x800000}[pick%7]
			binary.BigEndian.PutUint64(bin[8:], v)
			desc = fmt.Sprintf("hdr_size %d", v)
		case 3:
			seq := binary.BigEndian.Uint64(bin[16:])
			v := []uint64{0, 1, ^uint64(0), seq + 1, seq - 1}[pick%5]
			binary.BigEndian.PutUint64(bin[16:], v)
			desc = fmt.Sprintf("seqid %d", v)
		case 4:
			fillField(bin[24:72], pick)
			desc = "label"
		case 5:
			fillField(bin[208:256], pick)
			desc = "subsystem"
		case 6:
			fillField(bin[168:208], pick)
			desc = "uuid"
		case 7:
			alg := []string{"sha1", "sha512", "sha384", "sha224", "md5", "", "whirlpool", "SHA256", "sha256x", strings.Repeat("s", 32)}[pick%10]
			clear(bin[72:104])
			copy(bin[72:104], alg)
			desc = "checksum_alg " + strconv.Quote(alg)
		case 8:
			v := []uint64{0, size, 4096, size * 2, pick}[pick%5]
			binary.BigEndian.PutUint64(bin[256:], v)
			desc = fmt.Sprintf("hdr_offset %d", v)
		case 9:
			i := 264 + int(pick%(448-264))
			if pick%2 == 1 {
				i = 512 + int(pick%(BinaryHeaderSize-512))
			}
			bin[i] = byte(pick>>32) | 1
			desc = fmt.Sprintf("byte %d", i)
		case 10:
			bin[448+int(pick%32)] ^= 0x40
			desc = "checksum (not resealed)"
			continue
		default:
			for i := range 64 {
				bin[104+i] = byte(pick >> (i % 8))
			}
			desc = "salt"
		}
		luks2test.Reseal(cp, nil)
	}
	return "binary " + which + ": " + desc
}

// fillField fills a NUL-terminated binary field with text of the
// variant pick selects: full (no terminator), non-ASCII, empty, or short.
func fillField(f []byte, pick uint64) {
	switch pick % 4 {
	case 0:
		for i := range f {
			f[i] = 'a'
		}
	case 1:
		clear(f)
		copy(f, "\xff\xfe-\x01")
	case 2:
		clear(f)
	default:
		clear(f)
		copy(f, "not-a-uuid")
	}
}
