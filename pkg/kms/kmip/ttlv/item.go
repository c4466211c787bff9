package ttlv

import (
	"fmt"
	"time"
)

// Find returns the first child of a structure with tag t.
func (it *Item) Find(t Tag) (*Item, bool) {
	for i := range it.Items {
		if it.Items[i].Tag == t {
			return &it.Items[i], true
		}
	}
	return nil, false
}

// All returns every child with tag t.
func (it *Item) All(t Tag) []*Item {
	var out []*Item
	for i := range it.Items {
		if it.Items[i].Tag == t {
			out = append(out, &it.Items[i])
		}
	}
	return out
}

// Child returns the child with tag t, checking its type.
func (it *Item) Child(t Tag, typ Type) (*Item, error) {
	c, ok := it.Find(t)
	if !ok {
		return nil, fmt.Errorf("%w: tag 0x%06x has no child 0x%06x", ErrMalformed, uint32(it.Tag), uint32(t))
	}
	if c.Type != typ {
		return nil, fmt.Errorf("%w: tag 0x%06x is a %s, want %s", ErrMalformed, uint32(t), c.Type, typ)
	}
	return c, nil
}

// Text returns a TextString child's value.
func (it *Item) TextOf(t Tag) (string, error) {
	c, err := it.Child(t, TextString)
	if err != nil {
		return "", err
	}
	return string(c.Bytes), nil
}

// BytesOf returns a ByteString child's value, a slice of the input.
func (it *Item) BytesOf(t Tag) ([]byte, error) {
	c, err := it.Child(t, ByteString)
	if err != nil {
		return nil, err
	}
	return c.Bytes, nil
}

// EnumOf returns an Enumeration child's value.
func (it *Item) EnumOf(t Tag) (uint32, error) {
	c, err := it.Child(t, Enumeration)
	if err != nil {
		return 0, err
	}
	return uint32(c.Int), nil
}

// IntOf returns an Integer child's value.
func (it *Item) IntOf(t Tag) (int32, error) {
	c, err := it.Child(t, Integer)
	if err != nil {
		return 0, err
	}
	return int32(c.Int), nil
}

// TimeOf returns a DateTime child's value.
func (it *Item) TimeOf(t Tag) (time.Time, error) {
	c, err := it.Child(t, DateTime)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(c.Int, 0).UTC(), nil
}
