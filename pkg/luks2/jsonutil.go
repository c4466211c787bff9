package luks2

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/atrest/atrest/pkg/luks2/internal/ojson"
)

// number parses an object key or array element that names a numbered object
// ("0", "12"). cryptsetup only checks for digits but addresses objects by
// their canonical spelling, so "007" could never be used; atrest refuses it.
func number(s string) (int, error) {
	if s == "" || len(s) > 9 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%q is not a number in canonical form", s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a number", s)
		}
	}
	n, _ := strconv.Atoi(s)
	return n, nil
}

// u64String parses the decimal strings LUKS2 uses for 64-bit values.
func u64String(v *ojson.Value, key string) (uint64, error) {
	s, err := nonEmptyString(v, key)
	if err != nil {
		return 0, err
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q: %q is not a decimal number", key, s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %q does not fit 64 bits", key, s)
	}
	return n, nil
}

func member(v *ojson.Value, key string, kind ojson.Kind) (*ojson.Value, error) {
	m := v.Get(key)
	if m == nil {
		return nil, fmt.Errorf("%q is missing", key)
	}
	if m.Kind != kind {
		return nil, fmt.Errorf("%q is %s, not %s", key, m.Kind, kind)
	}
	return m, nil
}

func nonEmptyString(v *ojson.Value, key string) (string, error) {
	m, err := member(v, key, ojson.String)
	if err != nil {
		return "", err
	}
	if m.Str == "" {
		return "", fmt.Errorf("%q is empty", key)
	}
	return m.Str, nil
}

// intMember reads an integer field (json-c's json_type_int).
func intMember(v *ojson.Value, key string) (int64, error) {
	m, err := member(v, key, ojson.Int)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(m.Str, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %s is out of range", key, m.Str)
	}
	return n, nil
}

// u32Member reads an integer field that must fit 32 bits unsigned
// (cryptsetup's validate_json_uint32).
func u32Member(v *ojson.Value, key string) (uint32, error) {
	n, err := intMember(v, key)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > math.MaxUint32 {
		return 0, fmt.Errorf("%q: %d is outside [0, %d]", key, n, uint32(math.MaxUint32))
	}
	return uint32(n), nil
}

func base64Member(v *ojson.Value, key string) ([]byte, error) {
	s, err := nonEmptyString(v, key)
	if err != nil {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not base64", key)
	}
	return b, nil
}

// stringArray reads an optional array of strings.
func stringArray(v *ojson.Value, key string) ([]string, error) {
	m := v.Get(key)
	if m == nil {
		return nil, nil
	}
	if m.Kind != ojson.Array {
		return nil, fmt.Errorf("%q is %s, not an array", key, m.Kind)
	}
	out := make([]string, 0, len(m.Elems))
	for i, e := range m.Elems {
		if e.Kind != ojson.String {
			return nil, fmt.Errorf("%q element %d is %s, not a string", key, i, e.Kind)
		}
		out = append(out, e.Str)
	}
	return out, nil
}

func stringsValue(ss []string) *ojson.Value {
	elems := make([]*ojson.Value, len(ss))
	for i, s := range ss {
		elems[i] = ojson.Str(s)
	}
	return ojson.NewArray(elems...)
}

// section returns the numbered members of a top-level section.
func section(top *ojson.Value, name string) (*ojson.Value, error) {
	s, err := member(top, name, ojson.Object)
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	for _, m := range s.Members {
		n, err := number(m.Key)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if seen[n] {
			return nil, fmt.Errorf("%s: %d appears twice", name, n)
		}
		seen[n] = true
		if m.Value.Kind != ojson.Object {
			return nil, fmt.Errorf("%s %s is %s, not an object", name, m.Key, m.Value.Kind)
		}
	}
	return s, nil
}

var errNoObject = errors.New("not a JSON object")
