package vault

import (
	"encoding/base64"
	"strconv"
)

// Request bodies that carry secrets are built by hand into one byte slice
// the caller clears after the request, instead of through encoding/json,
// which would leave copies in strings nobody can wipe.

// jsonField is a string field of a JSON object.
type jsonField struct {
	name  string
	value []byte // raw bytes, escaped as a JSON string
}

// jsonObject encodes fields as a JSON object of strings.
func jsonObject(fields ...jsonField) []byte {
	n := 2
	for _, f := range fields {
		n += len(f.name) + len(f.value) + 8
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, f := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, f.name)
		b = append(b, ':')
		b = appendString(b, f.value)
	}
	return append(b, '}')
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

// appendBase64 appends src as a base64 JSON string without an
// intermediate string.
func appendBase64(b []byte, src []byte) []byte {
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, src)
	return append(b, '"')
}

// appendInt appends a JSON number.
func appendInt(b []byte, n int) []byte { return strconv.AppendInt(b, int64(n), 10) }
