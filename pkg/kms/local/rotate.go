package local

import (
	"context"
	"fmt"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/secret"
)

// Rotate adds a new KEK version to the file; new wraps and rewraps use it
// and every older version keeps unwrapping.
func (ks *Keystore) Rotate(context.Context) (kms.KeyInfo, error) {
	return ks.modify(func(f *kekFile) error {
		if len(f.versions) >= maxRecords {
			return fmt.Errorf("%w: %d key versions; retire old ones first", kms.ErrInvalidRequest, maxRecords)
		}
		k, err := secret.Random(kekLen)
		if err != nil {
			return err
		}
		f.versions = append(f.versions, version{n: f.latest().n + 1, key: k})
		return nil
	})
}

// SetMinDecryptionVersion destroys every KEK version older than v: secrets
// wrapped with them can never be unwrapped again. Rewrap all tokens first.
// v may not exceed the newest version.
func (ks *Keystore) SetMinDecryptionVersion(_ context.Context, v int) (kms.KeyInfo, error) {
	return ks.modify(func(f *kekFile) error {
		if v < 1 || v > f.latest().n {
			return fmt.Errorf("%w: minimum decryption version %d outside 1..%d", kms.ErrInvalidRequest, v, f.latest().n)
		}
		keep := f.versions[:0]
		for _, x := range f.versions {
			if x.n < v {
				x.key.Wipe()
				continue
			}
			keep = append(keep, x)
		}
		f.versions = keep
		return nil
	})
}

// modify applies change to a fresh read of the file under an exclusive
// lock, writes the file atomically and keeps the result in memory.
func (ks *Keystore) modify(change func(*kekFile) error) (kms.KeyInfo, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	unlock, err := ks.lockFile()
	if err != nil {
		return kms.KeyInfo{}, fmt.Errorf("lock %s: %w", ks.path, err)
	}
	defer unlock()
	f, err := readKEKFile(ks.path)
	if err != nil {
		return kms.KeyInfo{}, err
	}
	if err := change(f); err != nil {
		f.wipe()
		return kms.KeyInfo{}, err
	}
	if err := f.write(ks.path); err != nil {
		f.wipe()
		return kms.KeyInfo{}, fmt.Errorf("write %s: %w", ks.path, err)
	}
	id, err := statID(ks.path)
	if err != nil {
		f.wipe()
		return kms.KeyInfo{}, err
	}
	if ks.f != nil {
		ks.f.wipe()
	}
	ks.f, ks.stat = f, id
	return describe(f), nil
}
