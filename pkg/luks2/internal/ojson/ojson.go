// Package ojson is a small JSON tree that keeps object members in their
// order, as json-c (cryptsetup's parser) does, so that atrest can rewrite a
// LUKS2 header and keep every field it does not interpret, in place.
//
// Duplicate keys follow json-c: the member keeps the position of its first
// occurrence and the value of its last. Output is compact (json-c's
// JSON_C_TO_STRING_PLAIN with NOSLASHESCAPE): no whitespace, '/' unescaped,
// non-ASCII text as UTF-8.
package ojson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Kind is a JSON value's type.
type Kind int

// The JSON kinds. Int is a number literal without fraction or exponent
// (json-c's json_type_int); Float is any other number.
const (
	Null Kind = iota
	Bool
	Int
	Float
	String
	Array
	Object
)

// Kind names carry their article, for error messages ("is an object").
var kindNames = [...]string{"null", "a boolean", "an integer", "a number", "a string", "an array", "an object"}

// String names the kind with its article, e.g. "an object".
func (k Kind) String() string { return kindNames[k] }

// Value is one JSON value. Str holds a string's text, a number's literal or
// "true"/"false".
type Value struct {
	Kind    Kind
	Str     string
	Elems   []*Value
	Members []Member
}

// Member is one key of an object.
type Member struct {
	Key   string
	Value *Value
}

// MaxDepth is json-c's default nesting limit (JSON_TOKENER_DEFAULT_DEPTH),
// which cryptsetup parses with: a value may sit at most 32 levels deep,
// the top-level value being level 1 and scalars counting as a level.
// cryptsetup refuses a header nested deeper, and so does Parse.
const MaxDepth = 32

// Parse reads exactly one JSON value from data; anything but whitespace
// after it is an error, and so is nesting deeper than MaxDepth.
func Parse(data []byte) (*Value, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := parse(dec, 1)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("ojson: data after the top-level value")
	}
	return v, nil
}

func parse(dec *json.Decoder, depth int) (*Value, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("ojson: nested deeper than %d levels", MaxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("ojson: %w", err)
	}
	switch t := tok.(type) {
	case nil:
		return &Value{Kind: Null}, nil
	case bool:
		return &Value{Kind: Bool, Str: strconv.FormatBool(t)}, nil
	case json.Number:
		s := string(t)
		if strings.ContainsAny(s, ".eE") {
			return &Value{Kind: Float, Str: s}, nil
		}
		return &Value{Kind: Int, Str: s}, nil
	case string:
		return &Value{Kind: String, Str: t}, nil
	case json.Delim:
		if t == '[' {
			v := &Value{Kind: Array}
			for dec.More() {
				e, err := parse(dec, depth+1)
				if err != nil {
					return nil, err
				}
				v.Elems = append(v.Elems, e)
			}
			_, err := dec.Token() // ']'
			return v, err
		}
		v := &Value{Kind: Object}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, fmt.Errorf("ojson: %w", err)
			}
			key, _ := kt.(string)
			e, err := parse(dec, depth+1)
			if err != nil {
				return nil, err
			}
			v.Set(key, e)
		}
		_, err := dec.Token() // '}'
		return v, err
	}
	return nil, fmt.Errorf("ojson: unexpected token %v", tok)
}

// Get returns the member value named key, or nil.
func (v *Value) Get(key string) *Value {
	if v == nil || v.Kind != Object {
		return nil
	}
	for _, m := range v.Members {
		if m.Key == key {
			return m.Value
		}
	}
	return nil
}

// Set replaces the member named key in place, or appends it.
func (v *Value) Set(key string, val *Value) {
	for i := range v.Members {
		if v.Members[i].Key == key {
			v.Members[i].Value = val
			return
		}
	}
	v.Members = append(v.Members, Member{Key: key, Value: val})
}

// Delete removes the member named key, if present.
func (v *Value) Delete(key string) {
	for i := range v.Members {
		if v.Members[i].Key == key {
			v.Members = append(v.Members[:i], v.Members[i+1:]...)
			return
		}
	}
}

// Clone returns a deep copy.
func (v *Value) Clone() *Value {
	if v == nil {
		return nil
	}
	c := &Value{Kind: v.Kind, Str: v.Str}
	if v.Elems != nil {
		c.Elems = make([]*Value, len(v.Elems))
		for i, e := range v.Elems {
			c.Elems[i] = e.Clone()
		}
	}
	if v.Members != nil {
		c.Members = make([]Member, len(v.Members))
		for i, m := range v.Members {
			c.Members[i] = Member{Key: m.Key, Value: m.Value.Clone()}
		}
	}
	return c
}

// Constructors for building values.

// Str returns a string value.
func Str(s string) *Value { return &Value{Kind: String, Str: s} }

// Uint returns an integer value.
func Uint(n uint64) *Value { return &Value{Kind: Int, Str: strconv.FormatUint(n, 10)} }

// NewObject returns an empty object.
func NewObject() *Value { return &Value{Kind: Object, Members: []Member{}} }

// NewArray returns an array of the given values.
func NewArray(elems ...*Value) *Value {
	return &Value{Kind: Array, Elems: append([]*Value{}, elems...)}
}

// Marshal returns the compact encoding of v.
func Marshal(v *Value) []byte {
	var b bytes.Buffer
	v.encode(&b)
	return b.Bytes()
}

func (v *Value) encode(b *bytes.Buffer) {
	switch v.Kind {
	case Null:
		b.WriteString("null")
	case Bool, Int, Float:
		b.WriteString(v.Str)
	case String:
		writeString(b, v.Str)
	case Array:
		b.WriteByte('[')
		for i, e := range v.Elems {
			if i > 0 {
				b.WriteByte(',')
			}
			e.encode(b)
		}
		b.WriteByte(']')
	case Object:
		b.WriteByte('{')
		for i, m := range v.Members {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(b, m.Key)
			b.WriteByte(':')
			m.Value.encode(b)
		}
		b.WriteByte('}')
	}
}

// writeString escapes like json-c: quote, backslash and control characters.
func writeString(b *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				b.WriteString(`\u00`)
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&0xf])
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
}
