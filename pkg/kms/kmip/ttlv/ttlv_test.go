package ttlv

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

// The examples of the KMIP 1.4 specification, section 9.1.2.
func TestSpecExamples(t *testing.T) {
	for _, c := range []struct {
		name string
		it   Item
		hex  string
	}{
		{"integer 8", Int32(0x420020, 8), "42002002000000040000000800000000"},
		{"long integer 123456789000000000", Long(0x420020, 123456789000000000), "4200200300000008 01B69B4BA5749200"},
		{"enumeration 255", Enum(0x420020, 255), "42002005000000040000 00FF00000000"},
		{"boolean true", Bool(0x420020, true), "42002006000000080000000000000001"},
		{"text Hello World", Text(0x420020, "Hello World"), "420020070000000B48656C6C6F20576F726C640000000000"},
		{"bytes 010203", Bytes(0x420020, []byte{1, 2, 3}), "42002008000000030102030000000000"},
		{"date-time", Time(0x420020, time.Date(2008, 3, 14, 11, 56, 40, 0, time.UTC)), "42002009000000080000000047DA67F8"},
		{"interval 10 days", Duration(0x420020, 10*24*time.Hour), "4200200A00000004000D2F0000000000"},
		{"structure", Struct(0x420020, Enum(0x420004, 254), Int32(0x420005, 255)),
			"42002001000000204200040500000004000000FE000000004200050200000004000000FF00000000"},
	} {
		want, err := hex.DecodeString(strings.ReplaceAll(c.hex, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		got := c.it.Encode(nil)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: encoded %X, want %X", c.name, got, want)
		}
		back, err := Decode(want)
		if err != nil {
			t.Errorf("%s: decode: %v", c.name, err)
			continue
		}
		if again := back.Encode(nil); !bytes.Equal(again, want) {
			t.Errorf("%s: re-encoded %X", c.name, again)
		}
	}
}

// Each malformed input is refused with its reason, before any
// allocation its lengths would ask for.
func TestDecodeRefuses(t *testing.T) {
	for _, c := range []struct{ name, hex, why string }{
		{"short header", "420020", "a header needs 8"},
		{"length beyond input", "42002008FFFFFFF0", "at most"},
		{"integer of 8 bytes", "42002002000000080000000800000000", "want 4"},
		{"boolean 2", "42002006000000080000000000000002", "boolean 2"},
		{"non-zero padding", "42002008000000030102030000000001", "padding"},
		{"unknown type", "420020FF00000000", "unknown type"},
		{"trailing bytes", "420020080000000000000000", "after the item"},
		{"child overruns parent", "4200200100000008420004050000000400000000FE000000", "left"},
	} {
		b, _ := hex.DecodeString(c.hex)
		_, err := Decode(b)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s: %v, want ErrMalformed mentioning %q", c.name, err, c.why)
		}
	}
	deep := Int32(1, 1)
	for range MaxDepth + 1 {
		deep = Struct(2, deep)
	}
	if _, err := Decode(deep.Encode(nil)); !errors.Is(err, ErrMalformed) {
		t.Errorf("nested %d deep: %v", MaxDepth+1, err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Struct(0x420078, Struct(0x420077, Int32(0x42000D, 1)), Text(0x420094, "1"), Bytes(0x4200C2, []byte("xyz")),
		Bool(0x420008, true), Long(1, -5), Time(2, time.Unix(1, 0)), Duration(3, time.Hour), Enum(4, 9),
		Item{Tag: 5, Type: BigInteger, Bytes: make([]byte, 8)}).Encode(nil))
	f.Add([]byte{0x42, 0, 0x20, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		it, err := Decode(b)
		if err != nil {
			return
		}
		if got := it.Encode(nil); !bytes.Equal(got, b) {
			t.Fatalf("decoded %X, re-encoded %X", b, got)
		}
		if it.Len() != len(b) {
			t.Fatalf("Len %d for %d bytes", it.Len(), len(b))
		}
	})
}
