package luks2

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/atrest/atrest/pkg/luks2/internal/ojson"
)

// BuiltinTokenPrefix is reserved for cryptsetup's built-in token types; atrest
// refuses to create tokens of such a type.
const BuiltinTokenPrefix = "luks2-"

// Token is one entry of the tokens section: a JSON object with a "type" and
// a "keyslots" array of keyslot numbers (as strings); every other field
// belongs to whoever wrote the token and is kept as it was.
type Token struct {
	ID       int
	Type     string
	Keyslots []int
	raw      *ojson.Value
}

// JSON returns the token as stored in the header (compact JSON), with the
// keyslots array reflecting Keyslots.
func (t *Token) JSON() []byte {
	return ojson.Marshal(t.encode())
}

// Field returns the raw JSON of one top-level field of the token, or nil.
func (t *Token) Field(name string) []byte {
	v := t.raw.Get(name)
	if v == nil {
		return nil
	}
	return ojson.Marshal(v)
}

func (t *Token) encode() *ojson.Value {
	v := t.raw.Clone()
	v.Set("type", ojson.Str(t.Type))
	v.Set("keyslots", slotArray(t.Keyslots))
	return v
}

func (t *Token) clone() *Token {
	return &Token{ID: t.ID, Type: t.Type, Keyslots: slices.Clone(t.Keyslots), raw: t.raw.Clone()}
}

// ParseToken checks a token's JSON as cryptsetup's token import does (an
// object with a non-empty string "type" and a "keyslots" array of keyslot
// numbers as strings) and returns it. Whether the keyslots exist is checked
// when the token is set on a header.
func ParseToken(data []byte) (*Token, error) {
	data = bytes.TrimSpace(data)
	v, err := ojson.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("luks2: token is not valid JSON: %w", err)
	}
	t, err := tokenFromJSON(v)
	if err != nil {
		return nil, fmt.Errorf("luks2: %w", err)
	}
	return t, nil
}

func tokenFromJSON(v *ojson.Value) (*Token, error) {
	if v.Kind != ojson.Object {
		return nil, errors.New("token is not a JSON object")
	}
	typ, err := nonEmptyString(v, "type")
	if err != nil {
		return nil, err
	}
	arr := v.Get("keyslots")
	if arr == nil || arr.Kind != ojson.Array {
		return nil, errors.New(`"keyslots" is missing or not an array`)
	}
	slots, err := slotList(arr)
	if err != nil {
		return nil, fmt.Errorf(`"keyslots": %w`, err)
	}
	return &Token{Type: typ, Keyslots: slots, raw: v}, nil
}

// slotList reads an array of numbered strings ("0", "1", ...).
func slotList(arr *ojson.Value) ([]int, error) {
	out := make([]int, 0, len(arr.Elems))
	for i, e := range arr.Elems {
		if e.Kind != ojson.String {
			return nil, fmt.Errorf("element %d is %s, not a string", i, e.Kind)
		}
		n, err := number(e.Str)
		if err != nil {
			return nil, fmt.Errorf("element %d: %w", i, err)
		}
		out = append(out, n)
	}
	return out, nil
}

func slotArray(ids []int) *ojson.Value {
	elems := make([]*ojson.Value, len(ids))
	for i, id := range ids {
		elems[i] = ojson.Str(strconv.Itoa(id))
	}
	return ojson.NewArray(elems...)
}

// checkNewTokenType applies the rule for tokens atrest writes.
func checkNewTokenType(typ string) error {
	if strings.HasPrefix(typ, BuiltinTokenPrefix) {
		return fmt.Errorf("%w: token type %q: the %q prefix is reserved for cryptsetup's built-in tokens", ErrInvalidHeader, typ, BuiltinTokenPrefix)
	}
	return nil
}
