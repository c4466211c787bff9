package local

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/secret"
)

// Ciphertexts look like Vault Transit's: "local:v<version>:<base64 of
// nonce, ciphertext and tag>". The additional data binds a ciphertext to
// this keystore, the key version and the volume UUID:
//
//	"atrest-local-kek-v1" 0x00 | keystore id | version (4 bytes) | volume UUID
const (
	prefix   = "local"
	adLabel  = "atrest-local-kek-v1\x00"
	nonceLen = 12
	// maxPlaintext bounds what is wrapped: platform secrets are 32 bytes,
	// recovery keys under 100.
	maxPlaintext = 4096
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
	if pt.Len() > maxPlaintext {
		return kms.Wrapped{}, fmt.Errorf("%w: plaintext of %d bytes, at most %d", kms.ErrInvalidRequest, pt.Len(), maxPlaintext)
	}
	v := f.latest()
	aead, err := secret.NewAESGCM(v.key)
	if err != nil {
		return kms.Wrapped{}, err
	}
	defer aead.Wipe()
	out := make([]byte, nonceLen, nonceLen+pt.Len()+aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return kms.Wrapped{}, err
	}
	out = aead.Seal(out, out[:nonceLen], pt.Bytes(), additionalData(f, v.n, volume))
	return kms.Wrapped{
		Backend:    Backend,
		Key:        hex.EncodeToString(f.id[:]),
		KeyVersion: v.n,
		Ciphertext: fmt.Sprintf("%s:v%d:%s", prefix, v.n, base64.StdEncoding.EncodeToString(out)),
	}, nil
}

// open unwraps one ciphertext into locked memory.
func open(f *kekFile, volume string, w kms.Wrapped) (*secret.Key, error) {
	n, err := kms.CiphertextVersion(prefix, w.Ciphertext)
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
	body := w.Ciphertext[len(fmt.Sprintf("%s:v%d:", prefix, n)):]
	raw, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("%w: ciphertext is not base64", kms.ErrCiphertextRejected)
	}
	aead, err := secret.NewAESGCM(key)
	if err != nil {
		return nil, err
	}
	defer aead.Wipe()
	if len(raw) < nonceLen+aead.Overhead()+1 {
		return nil, fmt.Errorf("%w: ciphertext too short", kms.ErrCiphertextRejected)
	}
	pt, err := secret.New(len(raw) - nonceLen - aead.Overhead())
	if err != nil {
		return nil, err
	}
	// Decrypt straight into locked memory: dst has exactly the capacity
	// needed, so Open does not allocate.
	dst := pt.Bytes()[:0]
	got, err := aead.Open(dst, raw[:nonceLen], raw[nonceLen:], additionalData(f, n, volume))
	if err != nil {
		pt.Wipe()
		return nil, fmt.Errorf("%w: authentication failed (another volume's token, or tampered)", kms.ErrCiphertextRejected)
	}
	if len(got) == 0 || &got[0] != &pt.Bytes()[0] {
		clear(got)
		pt.Wipe()
		return nil, fmt.Errorf("local: decrypted outside locked memory")
	}
	return pt, nil
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
	out := make([]kms.WrapResult, len(reqs))
	for i, r := range reqs {
		out[i].Wrapped, out[i].Err = seal(f, r.Context, r.Plaintext)
	}
	return out, nil
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
	out := make([]kms.UnwrapResult, len(reqs))
	for i, r := range reqs {
		if itemErrs[i] != nil {
			out[i].Err = itemErrs[i]
			continue
		}
		out[i].Plaintext, out[i].Err = open(f, r.Context, r.Wrapped)
	}
	return out, nil
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
	out := make([]kms.WrapResult, len(reqs))
	for i, r := range reqs {
		if itemErrs[i] != nil {
			out[i].Err = itemErrs[i]
			continue
		}
		pt, err := open(f, r.Context, r.Wrapped)
		if err != nil {
			out[i].Err = err
			continue
		}
		out[i].Wrapped, out[i].Err = seal(f, r.Context, pt)
		pt.Wipe()
	}
	return out, nil
}

// locked is a view of ks for helpers that call Backend and Key while
// ks.mu is held.
func (ks *Keystore) locked() kms.KEK { return lockedView{ks} }

type lockedView struct{ *Keystore }

func (v lockedView) Key() string { return hex.EncodeToString(v.f.id[:]) }
