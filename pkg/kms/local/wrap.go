package local

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/internal/gcm"
	"github.com/atrest/atrest/pkg/secret"
)

// Ciphertexts look like Vault Transit's: "local:v<version>:<base64 of
// nonce, ciphertext and tag>". The additional data binds a ciphertext to
// this keystore, the key version and the volume UUID:
//
//	"atrest-local-kek-v1" 0x00 | keystore id | version (4 bytes) | volume UUID
const (
	prefix  = "local"
	adLabel = "atrest-local-kek-v1\x00"
)

func additionalData(f *kekFile, n int, volume string) []byte {
	ad := make([]byte, 0, len(adLabel)+idLen+4+len(volume))
	ad = append(ad, adLabel...)
	ad = append(ad, f.id[:]...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(n))
	return append(ad, volume...)
}

// seal wraps one plaintext with the newest version.
func seal(f *kekFile, volume string, pt *secret.Key) (kms.Wrapped, error) {
	v := f.latest()
	ct, err := gcm.Seal(v.key, prefix, v.n, pt, additionalData(f, v.n, volume))
	if err != nil {
		return kms.Wrapped{}, err
	}
	return kms.Wrapped{Backend: Backend, Key: hex.EncodeToString(f.id[:]), KeyVersion: v.n, Ciphertext: ct}, nil
}

// open unwraps one ciphertext into locked memory.
func open(f *kekFile, volume string, w kms.Wrapped) (*secret.Key, error) {
	n, err := gcm.Version(prefix, w.Ciphertext)
	if err != nil {
		return nil, err
	}
	key, ok := f.lookup(n)
	if !ok {
		if n > f.latest().n {
			return nil, fmt.Errorf("%w: key version %d is newer than this keystore's newest (%d)", kms.ErrCiphertextRejected, n, f.latest().n)
		}
		return nil, fmt.Errorf("%w: key version %d was retired (minimum decryption version is %d)", kms.ErrCiphertextRejected, n, f.versions[0].n)
	}
	return gcm.Open(key, prefix, n, w.Ciphertext, additionalData(f, n, volume))
}

// Wrap encrypts each plaintext under the newest KEK version.
func (ks *Keystore) Wrap(_ context.Context, reqs []kms.WrapRequest) ([]kms.WrapResult, error) {
	if err := kms.CheckRequests(reqs); err != nil {
		return nil, err
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	f, err := ks.current()
	if err != nil {
		return nil, err
	}
	return gcm.WrapEach(reqs, func(volume string, pt *secret.Key) (kms.Wrapped, error) { return seal(f, volume, pt) }), nil
}

// Unwrap decrypts each wrapped secret; the caller wipes the plaintexts.
func (ks *Keystore) Unwrap(_ context.Context, reqs []kms.UnwrapRequest) ([]kms.UnwrapResult, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	f, err := ks.current()
	if err != nil {
		return nil, err
	}
	itemErrs, err := kms.CheckUnwrapRequests(ks.locked(), reqs)
	if err != nil {
		return nil, err
	}
	return gcm.UnwrapEach(reqs, itemErrs, opener(f)), nil
}

func opener(f *kekFile) gcm.Opener {
	return func(volume string, w kms.Wrapped) (*secret.Key, error) { return open(f, volume, w) }
}

// Rewrap unwraps and wraps again under the newest version; the plaintext
// exists only in locked memory, briefly.
func (ks *Keystore) Rewrap(_ context.Context, reqs []kms.UnwrapRequest) ([]kms.WrapResult, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	f, err := ks.current()
	if err != nil {
		return nil, err
	}
	itemErrs, err := kms.CheckUnwrapRequests(ks.locked(), reqs)
	if err != nil {
		return nil, err
	}
	return gcm.RewrapEach(reqs, itemErrs, opener(f), func(volume string, pt *secret.Key) (kms.Wrapped, error) { return seal(f, volume, pt) }), nil
}

// locked is a view of ks for helpers that call Backend and Key while
// ks.mu is held.
func (ks *Keystore) locked() kms.KEK { return lockedView{ks} }

type lockedView struct{ *Keystore }

func (v lockedView) Key() string { return hex.EncodeToString(v.f.id[:]) }
