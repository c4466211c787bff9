package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"reflect"
	"unsafe"
)

// AEAD is AES-GCM whose expanded key lives in locked memory. crypto/aes
// keeps the key schedule (which begins with the key itself) and GCM's hash
// key in objects on the Go heap, where every use of a key would leave a
// copy behind for a core dump or a heap scan to find; AEAD moves those
// objects into a Key's pages and zeroes the heap originals at once. Wipe
// it when done, like a Key.
type AEAD struct {
	cipher.AEAD
	mem *Key
}

// NewAESGCM returns AES-GCM (12-byte nonce, 16-byte tag) under k.
func NewAESGCM(k *Key) (*AEAD, error) {
	block, err := aes.NewCipher(k.Bytes())
	if err != nil {
		return nil, err
	}
	defer wipeObject(block)
	g, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	defer wipeObject(g)
	moved, mem, err := moveToLocked(g)
	if err != nil {
		return nil, err
	}
	return &AEAD{AEAD: moved.(cipher.AEAD), mem: mem}, nil
}

// Wipe zeroes the expanded key; the AEAD is unusable after.
func (a *AEAD) Wipe() {
	if a == nil {
		return
	}
	a.AEAD = nil
	a.mem.Wipe()
}

// moveToLocked copies the object v points to into locked memory and
// returns a value of v's type pointing there. It refuses objects that hold
// pointers, which the garbage collector must be able to see.
func moveToLocked(v any) (any, *Key, error) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || !pointerFree(rv.Type().Elem()) {
		return nil, nil, fmt.Errorf("secret: cannot move a %T into locked memory", v)
	}
	size := int(rv.Type().Elem().Size())
	mem, err := New(size)
	if err != nil {
		return nil, nil, err
	}
	copy(mem.Bytes(), unsafe.Slice((*byte)(rv.UnsafePointer()), size))
	return reflect.NewAt(rv.Type().Elem(), unsafe.Pointer(&mem.Bytes()[0])).Interface(), mem, nil
}

// wipeObject zeroes the pointer-free object v points to (a cipher whose
// fields the standard library does not let us clear otherwise).
func wipeObject(v any) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || !pointerFree(rv.Type().Elem()) {
		return
	}
	clear(unsafe.Slice((*byte)(rv.UnsafePointer()), rv.Type().Elem().Size()))
}

// pointerFree reports whether values of t contain no pointers.
func pointerFree(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return true
	case reflect.Array:
		return t.Len() == 0 || pointerFree(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !pointerFree(t.Field(i).Type) {
				return false
			}
		}
		return true
	}
	return false
}
