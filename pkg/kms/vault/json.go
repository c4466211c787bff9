package vault

import (
	"encoding/base64"
	"strconv"
)

// Request bodies that carry secrets are built by hand into one byte slice
// the caller clears after the request, instead of through encoding/json,
// which would leave copies in strings nobody can wipe. A jsonBuf clears
// every array it outgrows, so a body that had to grow leaves no stray
// partial copy on the heap either; callers size it up front when they can.

// jsonBuf builds a JSON document that may hold secrets.
type jsonBuf struct{ b []byte }

// newJSONBuf returns a jsonBuf with room for n bytes.
func newJSONBuf(n int) *jsonBuf { return &jsonBuf{b: make([]byte, 0, n)} }

// reserve makes room for n more bytes, clearing the old array if it has
// to move.
func (w *jsonBuf) reserve(n int) {
	if cap(w.b)-len(w.b) >= n {
		return
	}
	nb := make([]byte, len(w.b), max(2*cap(w.b), len(w.b)+n))
	copy(nb, w.b)
	clear(w.b[:cap(w.b)])
	w.b = nb
}

// raw appends JSON text as it is (punctuation, field names known to need
// no escaping).
func (w *jsonBuf) raw(s string) *jsonBuf {
	w.reserve(len(s))
	w.b = append(w.b, s...)
	return w
}

// str appends s as a JSON string.
func (w *jsonBuf) str(s []byte) *jsonBuf {
	w.reserve(stringLen(s))
	w.b = appendString(w.b, s)
	return w
}

// base64 appends src as a base64 JSON string without an intermediate
// string.
func (w *jsonBuf) base64(src []byte) *jsonBuf {
	w.reserve(base64.StdEncoding.EncodedLen(len(src)) + 2)
	w.b = append(w.b, '"')
	w.b = base64.StdEncoding.AppendEncode(w.b, src)
	w.b = append(w.b, '"')
	return w
}

// int appends a JSON number.
func (w *jsonBuf) int(n int) *jsonBuf {
	w.reserve(20)
	w.b = strconv.AppendInt(w.b, int64(n), 10)
	return w
}

// bytes returns the document; the caller clears it after use.
func (w *jsonBuf) bytes() []byte { return w.b }

// jsonField is a string field of a JSON object.
type jsonField struct {
	name  string
	value []byte // raw bytes, escaped as a JSON string
}

// jsonObject encodes fields as a JSON object of strings, in one exactly
// sized array.
func jsonObject(fields ...jsonField) []byte {
	n := 2
	for _, f := range fields {
		n += stringLen([]byte(f.name)) + stringLen(f.value) + 2
	}
	w := newJSONBuf(n).raw("{")
	for i, f := range fields {
		if i > 0 {
			w.raw(",")
		}
		w.str([]byte(f.name)).raw(":").str(f.value)
	}
	return w.raw("}").bytes()
}

// stringLen is the length of s encoded by appendString.
func stringLen(s []byte) int {
	n := 2
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			n += 2
		case c < 0x20:
			n += 6
		default:
			n++
		}
	}
	return n
}

// appendString appends s as a JSON string.
func appendString[T string | []byte](b []byte, s T) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, `\u00`...)
			b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
