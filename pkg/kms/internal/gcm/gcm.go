// Package gcm is the AES-256-GCM wrapping the embedded KEKs share (the
// local keystore and the TPM-sealed KEK): ciphertexts in Vault Transit's
// form "<prefix>:v<version>:<base64 of nonce, ciphertext and tag>",
// decrypted straight into locked memory.
package gcm

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/secret"
)

const (
	nonceLen = 12
	// MaxPlaintext bounds what is wrapped: platform secrets are 32 bytes,
	// recovery keys under 100.
	MaxPlaintext = 4096
)

// Seal encrypts pt under key (AES-256) with additional data ad and returns
// the ciphertext string for version.
func Seal(key *secret.Key, prefix string, version int, pt *secret.Key, ad []byte) (string, error) {
	if pt.Len() > MaxPlaintext {
		return "", fmt.Errorf("%w: plaintext of %d bytes, at most %d", kms.ErrInvalidRequest, pt.Len(), MaxPlaintext)
	}
	aead, err := secret.NewAESGCM(key)
	if err != nil {
		return "", err
	}
	defer aead.Wipe()
	out := make([]byte, nonceLen, nonceLen+pt.Len()+aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return "", err
	}
	out = aead.Seal(out, out[:nonceLen], pt.Bytes(), ad)
	return fmt.Sprintf("%s:v%d:%s", prefix, version, base64.StdEncoding.EncodeToString(out)), nil
}

// Version reads the key version of a ciphertext made with prefix.
func Version(prefix, ciphertext string) (int, error) {
	return kms.CiphertextVersion(prefix, ciphertext)
}

// Open decrypts a ciphertext of the given version under key with ad into
// locked memory; the caller wipes the result. Every failure wraps
// kms.ErrCiphertextRejected except a failure to lock memory.
func Open(key *secret.Key, prefix string, version int, ciphertext string, ad []byte) (*secret.Key, error) {
	body := ciphertext[len(fmt.Sprintf("%s:v%d:", prefix, version)):]
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
	got, err := aead.Open(dst, raw[:nonceLen], raw[nonceLen:], ad)
	if err != nil {
		pt.Wipe()
		return nil, fmt.Errorf("%w: authentication failed (another volume's token, or tampered)", kms.ErrCiphertextRejected)
	}
	if len(got) == 0 || &got[0] != &pt.Bytes()[0] {
		clear(got)
		pt.Wipe()
		return nil, fmt.Errorf("%s: decrypted outside locked memory", prefix)
	}
	return pt, nil
}

// Sealer wraps one plaintext for a volume.
type Sealer func(volume string, pt *secret.Key) (kms.Wrapped, error)

// Opener unwraps one volume's token into locked memory.
type Opener func(volume string, w kms.Wrapped) (*secret.Key, error)

// WrapEach is a KEK's Wrap batch over seal, one result per request.
func WrapEach(reqs []kms.WrapRequest, seal Sealer) []kms.WrapResult {
	out := make([]kms.WrapResult, len(reqs))
	for i, r := range reqs {
		out[i].Wrapped, out[i].Err = seal(r.Context, r.Plaintext)
	}
	return out
}

// UnwrapEach is a KEK's Unwrap batch over open; items with an error in
// itemErrs (kms.CheckUnwrapRequests) fail with it.
func UnwrapEach(reqs []kms.UnwrapRequest, itemErrs []error, open Opener) []kms.UnwrapResult {
	out := make([]kms.UnwrapResult, len(reqs))
	for i, r := range reqs {
		if itemErrs[i] != nil {
			out[i].Err = itemErrs[i]
			continue
		}
		out[i].Plaintext, out[i].Err = open(r.Context, r.Wrapped)
	}
	return out
}

// RewrapEach is a KEK's Rewrap batch: open, then seal again; the
// plaintext exists only in locked memory, briefly.
func RewrapEach(reqs []kms.UnwrapRequest, itemErrs []error, open Opener, seal Sealer) []kms.WrapResult {
	out := make([]kms.WrapResult, len(reqs))
	for i, r := range reqs {
		if itemErrs[i] != nil {
			out[i].Err = itemErrs[i]
			continue
		}
		pt, err := open(r.Context, r.Wrapped)
		if err != nil {
			out[i].Err = err
			continue
		}
		out[i].Wrapped, out[i].Err = seal(r.Context, pt)
		pt.Wipe()
	}
	return out
}
