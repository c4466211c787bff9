// Package ttlv encodes and decodes KMIP's Tag-Type-Length-Value format
// (KMIP 1.4 specification, section 9.1): a 3-byte tag, a 1-byte type, a
// 4-byte big-endian length and a value padded with zeros to a multiple of
// eight bytes.
//
// The decoder is written for hostile input: every length is checked
// against the bytes that remain before anything is allocated, nesting is
// bounded, and only canonical encodings are accepted (zero padding, exact
// lengths for fixed-size types, booleans 0 or 1), so that whatever Decode
// accepts, Encode reproduces byte for byte. Byte and text strings are
// returned as sub-slices of the input, never copied: a caller that decodes
// a message holding key material wipes one buffer, the input.
package ttlv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Tag is a KMIP tag, 0x42XXXX for the standard ones.
type Tag uint32

// Type is a TTLV item type.
type Type byte

// The item types of KMIP 1.4 (section 9.1.1.2).
const (
	Structure   Type = 0x01
	Integer     Type = 0x02
	LongInteger Type = 0x03
	BigInteger  Type = 0x04
	Enumeration Type = 0x05
	Boolean     Type = 0x06
	TextString  Type = 0x07
	ByteString  Type = 0x08
	DateTime    Type = 0x09
	Interval    Type = 0x0A
)

func (t Type) String() string {
	names := [...]string{"", "Structure", "Integer", "LongInteger", "BigInteger", "Enumeration",
		"Boolean", "TextString", "ByteString", "DateTime", "Interval"}
	if int(t) < len(names) && t != 0 {
		return names[t]
	}
	return fmt.Sprintf("Type(0x%02x)", byte(t))
}

// Item is one TTLV item. Which field holds the value depends on Type:
// Int for Integer, LongInteger, Enumeration, Interval, DateTime (seconds
// since the epoch) and Boolean (0 or 1); Bytes for TextString, ByteString
// and BigInteger (two's complement, a multiple of 8 bytes); Items for
// Structure.
type Item struct {
	Tag   Tag
	Type  Type
	Int   int64
	Bytes []byte
	Items []Item
}

// Limits of the decoder.
const (
	// MaxDepth bounds the nesting of structures; KMIP messages nest about
	// eight deep.
	MaxDepth  = 32
	headerLen = 8
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed ttlv")

// Struct builds a Structure from its children.
func Struct(tag Tag, items ...Item) Item { return Item{Tag: tag, Type: Structure, Items: items} }

// Int32 builds an Integer.
func Int32(tag Tag, v int32) Item { return Item{Tag: tag, Type: Integer, Int: int64(v)} }

// Long builds a LongInteger.
func Long(tag Tag, v int64) Item { return Item{Tag: tag, Type: LongInteger, Int: v} }

// Enum builds an Enumeration.
func Enum(tag Tag, v uint32) Item { return Item{Tag: tag, Type: Enumeration, Int: int64(v)} }

// Bool builds a Boolean.
func Bool(tag Tag, v bool) Item {
	it := Item{Tag: tag, Type: Boolean}
	if v {
		it.Int = 1
	}
	return it
}

// Text builds a TextString.
func Text(tag Tag, s string) Item { return Item{Tag: tag, Type: TextString, Bytes: []byte(s)} }

// Bytes builds a ByteString; b is not copied.
func Bytes(tag Tag, b []byte) Item { return Item{Tag: tag, Type: ByteString, Bytes: b} }

// Time builds a DateTime, to the second.
func Time(tag Tag, t time.Time) Item { return Item{Tag: tag, Type: DateTime, Int: t.Unix()} }

// Duration builds an Interval, in whole seconds.
func Duration(tag Tag, d time.Duration) Item {
	return Item{Tag: tag, Type: Interval, Int: int64(d / time.Second)}
}

// valueLen is the unpadded length of its value.
func (it Item) valueLen() int {
	switch it.Type {
	case Structure:
		n := 0
		for i := range it.Items {
			n += it.Items[i].Len()
		}
		return n
	case Integer, Enumeration, Interval:
		return 4
	case LongInteger, Boolean, DateTime:
		return 8
	default:
		return len(it.Bytes)
	}
}

func pad(n int) int { return (n + 7) &^ 7 }

// Len is the encoded length of it, header and padding included.
func (it Item) Len() int { return headerLen + pad(it.valueLen()) }

// Encode appends the encoding of it to dst.
func (it Item) Encode(dst []byte) []byte {
	n := it.valueLen()
	dst = append(dst, byte(it.Tag>>16), byte(it.Tag>>8), byte(it.Tag), byte(it.Type))
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	switch it.Type {
	case Structure:
		for i := range it.Items {
			dst = it.Items[i].Encode(dst)
		}
	case Integer, Enumeration, Interval:
		dst = binary.BigEndian.AppendUint32(dst, uint32(it.Int))
	case LongInteger, Boolean, DateTime:
		dst = binary.BigEndian.AppendUint64(dst, uint64(it.Int))
	default:
		dst = append(dst, it.Bytes...)
	}
	for range pad(n) - n {
		dst = append(dst, 0)
	}
	return dst
}

// EncodeTo encodes it into dst, which must be exactly it.Len() bytes
// long (a buffer in locked memory for a message carrying a plaintext).
func (it Item) EncodeTo(dst []byte) error {
	if len(dst) != it.Len() {
		return fmt.Errorf("ttlv: buffer of %d bytes for an item of %d", len(dst), it.Len())
	}
	out := it.Encode(dst[:0])
	if len(out) != len(dst) || (len(out) > 0 && &out[0] != &dst[0]) {
		return errors.New("ttlv: encoding left the buffer")
	}
	return nil
}

// Header reads the tag, type and length at the start of b (at least 8
// bytes) and returns the total length of the item, padding included, so a
// reader of a stream knows how much more to read. It rejects lengths
// above max.
func Header(b []byte, max int) (Tag, Type, int, error) {
	if len(b) < headerLen {
		return 0, 0, 0, fmt.Errorf("%w: %d bytes, a header needs 8", ErrMalformed, len(b))
	}
	tag := Tag(b[0])<<16 | Tag(b[1])<<8 | Tag(b[2])
	typ := Type(b[3])
	n := binary.BigEndian.Uint32(b[4:8])
	if uint64(n) > uint64(max) {
		return 0, 0, 0, fmt.Errorf("%w: item of %d bytes, at most %d accepted", ErrMalformed, n, max)
	}
	return tag, typ, headerLen + pad(int(n)), nil
}

// Decode decodes exactly one item that fills b.
func Decode(b []byte) (Item, error) {
	it, rest, err := decode(b, 0)
	if err != nil {
		return Item{}, err
	}
	if len(rest) != 0 {
		return Item{}, fmt.Errorf("%w: %d bytes after the item", ErrMalformed, len(rest))
	}
	return it, nil
}

func decode(b []byte, depth int) (Item, []byte, error) {
	tag, typ, total, err := Header(b, len(b))
	if err != nil {
		return Item{}, nil, err
	}
	if total > len(b) {
		return Item{}, nil, fmt.Errorf("%w: tag 0x%06x: item of %d bytes, %d left", ErrMalformed, uint32(tag), total, len(b))
	}
	n := int(binary.BigEndian.Uint32(b[4:8]))
	val, padding, rest := b[headerLen:headerLen+n], b[headerLen+n:total], b[total:]
	for _, p := range padding {
		if p != 0 {
			return Item{}, nil, fmt.Errorf("%w: tag 0x%06x: non-zero padding", ErrMalformed, uint32(tag))
		}
	}
	it := Item{Tag: tag, Type: typ}
	fixed := func(want int) error {
		if n != want {
			return fmt.Errorf("%w: tag 0x%06x: %s of %d bytes, want %d", ErrMalformed, uint32(tag), typ, n, want)
		}
		return nil
	}
	switch typ {
	case Structure:
		if depth >= MaxDepth {
			return Item{}, nil, fmt.Errorf("%w: structures nested deeper than %d", ErrMalformed, MaxDepth)
		}
		if n%8 != 0 {
			return Item{}, nil, fmt.Errorf("%w: tag 0x%06x: structure of %d bytes", ErrMalformed, uint32(tag), n)
		}
		for len(val) > 0 {
			var child Item
			if child, val, err = decode(val, depth+1); err != nil {
				return Item{}, nil, err
			}
			it.Items = append(it.Items, child)
		}
	case Integer, Enumeration, Interval:
		if err := fixed(4); err != nil {
			return Item{}, nil, err
		}
		u := binary.BigEndian.Uint32(val)
		if typ == Integer {
			it.Int = int64(int32(u))
		} else {
			it.Int = int64(u)
		}
	case LongInteger, DateTime, Boolean:
		if err := fixed(8); err != nil {
			return Item{}, nil, err
		}
		it.Int = int64(binary.BigEndian.Uint64(val))
		if typ == Boolean && it.Int != 0 && it.Int != 1 {
			return Item{}, nil, fmt.Errorf("%w: tag 0x%06x: boolean %d", ErrMalformed, uint32(tag), it.Int)
		}
	case BigInteger:
		if n%8 != 0 {
			return Item{}, nil, fmt.Errorf("%w: tag 0x%06x: big integer of %d bytes", ErrMalformed, uint32(tag), n)
		}
		it.Bytes = val
	case TextString, ByteString:
		it.Bytes = val
	default:
		return Item{}, nil, fmt.Errorf("%w: tag 0x%06x: unknown type 0x%02x", ErrMalformed, uint32(tag), byte(typ))
	}
	return it, rest, nil
}
