package local

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/internal/keyfile"
	"github.com/atrest/atrest/pkg/secret"
)

// The KEK file, all integers big-endian:
//
//	magic    8 bytes  "ATRKEK01"
//	id      16 bytes  random keystore id (the key name in tokens, in hex)
//	count    4 bytes  number of versions that follow, ascending
//	count × { version 4 bytes, key 32 bytes }
//
// The whole file is read into locked memory and every version's key is
// copied into its own secret.Key; nothing of it touches the Go heap.
const (
	magic      = "ATRKEK01"
	idLen      = 16
	kekLen     = 32 // AES-256
	headerLen  = len(magic) + idLen + 4
	recordLen  = 4 + kekLen
	maxRecords = 4096
	maxFileLen = headerLen + maxRecords*recordLen
)

// kekFile is the parsed KEK file: the keystore id and its key versions.
type kekFile struct {
	id       [idLen]byte
	versions []version // ascending by number
}

type version struct {
	n   int
	key *secret.Key
}

func (f *kekFile) wipe() {
	for _, v := range f.versions {
		v.key.Wipe()
	}
	f.versions = nil
}

func (f *kekFile) latest() version { return f.versions[len(f.versions)-1] }

func (f *kekFile) lookup(n int) (*secret.Key, bool) {
	for _, v := range f.versions {
		if v.n == n {
			return v.key, true
		}
	}
	return nil, false
}

// newKEKFile makes a keystore with a fresh id and version 1.
func newKEKFile() (*kekFile, error) {
	f := &kekFile{}
	if _, err := io.ReadFull(rand.Reader, f.id[:]); err != nil {
		return nil, err
	}
	k, err := secret.Random(kekLen)
	if err != nil {
		return nil, err
	}
	f.versions = []version{{n: 1, key: k}}
	return f, nil
}

// readKEKFile reads and parses the private file at path.
func readKEKFile(path string) (*kekFile, error) {
	raw, err := keyfile.Read(path, maxFileLen, false)
	if err != nil {
		return nil, err
	}
	defer raw.Wipe()
	b := raw.Bytes()
	bad := func(why string) error {
		return fmt.Errorf("%w: %s: not an atrest KEK file: %s", kms.ErrConfig, path, why)
	}
	if len(b) < headerLen || string(b[:len(magic)]) != magic {
		return nil, bad("bad magic")
	}
	f := &kekFile{}
	copy(f.id[:], b[len(magic):])
	count := int(binary.BigEndian.Uint32(b[len(magic)+idLen:]))
	if count < 1 || count > maxRecords || len(b) != headerLen+count*recordLen {
		return nil, bad(fmt.Sprintf("%d versions in %d bytes", count, len(b)))
	}
	for i := range count {
		rec := b[headerLen+i*recordLen:]
		n := int(binary.BigEndian.Uint32(rec))
		if n < 1 || (i > 0 && n <= f.versions[i-1].n) {
			f.wipe()
			return nil, bad("versions out of order")
		}
		k, err := secret.New(kekLen)
		if err != nil {
			f.wipe()
			return nil, err
		}
		copy(k.Bytes(), rec[4:recordLen])
		f.versions = append(f.versions, version{n: n, key: k})
	}
	return f, nil
}

// encode serialises f into locked memory; the caller wipes the result.
func (f *kekFile) encode() (*secret.Key, error) {
	out, err := secret.New(headerLen + len(f.versions)*recordLen)
	if err != nil {
		return nil, err
	}
	b := out.Bytes()
	copy(b, magic)
	copy(b[len(magic):], f.id[:])
	binary.BigEndian.PutUint32(b[len(magic)+idLen:], uint32(len(f.versions)))
	for i, v := range f.versions {
		rec := b[headerLen+i*recordLen:]
		binary.BigEndian.PutUint32(rec, uint32(v.n))
		copy(rec[4:recordLen], v.key.Bytes())
	}
	return out, nil
}

// write replaces the file at path with f, atomically.
func (f *kekFile) write(path string) error {
	enc, err := f.encode()
	if err != nil {
		return err
	}
	defer enc.Wipe()
	return keyfile.WriteAtomic(path, enc.Bytes())
}

// create writes f as a new file at path, failing with errExists if one
// appeared meanwhile, so two processes starting at once cannot both
// create a KEK.
func (f *kekFile) create(path string) error {
	enc, err := f.encode()
	if err != nil {
		return err
	}
	defer enc.Wipe()
	return keyfile.CreateExclusive(path, enc.Bytes())
}

var errExists = keyfile.ErrExists
