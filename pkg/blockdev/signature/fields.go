package signature

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf8"
)

var (
	le16 = binary.LittleEndian.Uint16
	le32 = binary.LittleEndian.Uint32
	le64 = binary.LittleEndian.Uint64
	be16 = binary.BigEndian.Uint16
	be32 = binary.BigEndian.Uint32
	be64 = binary.BigEndian.Uint64
)

// cstr is a NUL-terminated (or full-length) on-disk string with trailing
// blanks removed; invalid UTF-8 is replaced so it prints safely.
func cstr(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	s := strings.TrimRight(string(b), " ")
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	return s
}

// uuidString formats 16 bytes the way libblkid prints a UUID; an all-zero
// UUID is "no UUID".
func uuidString(b []byte) string {
	if len(b) != 16 || allZero(b) {
		return ""
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func isPow2(n uint64) bool { return n != 0 && n&(n-1) == 0 }
