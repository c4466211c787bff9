// Package kms defines how atrest talks to a key management system: a small,
// context-first, batch-capable interface (KEK) that wraps each volume's
// platform secret under a key-encryption key, the optional capabilities some
// backends add (Rotator, Retirer, Session, Checker, SecretStore, Escrow),
// the sentinel errors callers branch on, and a Registry that routes wrapped
// secrets to the backend that made them.
//
// Backends live in sub-packages: kms/vault (HashiCorp Vault Transit and KV
// version 2), kms/kmip, kms/local (a key file on the node) and kms/tpm (a
// key sealed by the node's TPM).
//
// # Context
//
// Every wrap is bound to a context: the volume's LUKS2 UUID, exactly as the
// header spells it. A wrapped secret unwraps only with the context it was
// wrapped with, so a token copied into another volume's header is rejected
// (ErrCiphertextRejected) instead of unlocking it.
//
// # Who wipes what
//
// Plaintexts travel as *secret.Key. A backend never keeps or wipes a
// plaintext it is given (WrapRequest.Plaintext stays the caller's), and
// every plaintext it returns (UnwrapResult.Plaintext, SecretStore.Get) is
// a new Key that the caller must Wipe, on every path.
package kms

import (
	"context"

	"github.com/atrest/atrest/pkg/secret"
)

// KEK is a key-encryption key held by a KMS. Each method takes a batch and
// costs one round trip to the KMS for the whole batch where the backend
// supports it (Vault Transit does; the local keystore needs none). The
// single-item helpers Wrap, Unwrap and Rewrap in this package call these.
//
// A batch call either fails as a whole, returning a nil slice and an error
// (ErrUnavailable, ErrAuth, ErrPermissionDenied, ErrKeyNotFound,
// ErrInvalidRequest), or returns exactly one result per request, in request
// order, each with its own Err (typically ErrCiphertextRejected for one bad
// token among good ones). An empty batch returns an empty slice.
//
// Implementations are safe for concurrent use.
type KEK interface {
	// Backend is the name recorded in tokens, e.g. "vault-transit".
	Backend() string
	// Key is the name of the key-encryption key, e.g. "atrest-node7".
	Key() string
	// Wrap encrypts each plaintext under the newest key version, bound to
	// its context. The plaintexts remain the caller's to wipe.
	Wrap(ctx context.Context, reqs []WrapRequest) ([]WrapResult, error)
	// Unwrap decrypts each wrapped secret with its context. The caller
	// wipes every returned Plaintext.
	Unwrap(ctx context.Context, reqs []UnwrapRequest) ([]UnwrapResult, error)
	// Rewrap re-encrypts each wrapped secret under the newest key version
	// without the plaintext leaving the KMS (where the backend allows).
	// Items already at the newest version are rewrapped too; compare
	// Wrapped.KeyVersion with Describe's LatestVersion to skip them.
	Rewrap(ctx context.Context, reqs []UnwrapRequest) ([]WrapResult, error)
	// Describe reports the key's versions.
	Describe(ctx context.Context) (KeyInfo, error)
}

// WrapRequest asks for one plaintext to be wrapped.
type WrapRequest struct {
	// Context is the volume UUID the secret belongs to; it must not be empty.
	Context string
	// Plaintext is read, never retained or wiped, by the backend.
	Plaintext *secret.Key
}

// UnwrapRequest names one wrapped secret and the context it was wrapped
// with, for Unwrap and Rewrap.
type UnwrapRequest struct {
	// Context is the volume UUID the secret was wrapped for.
	Context string
	// Wrapped is what the volume's token stores.
	Wrapped Wrapped
}

// WrapResult is the outcome of one item of Wrap or Rewrap.
type WrapResult struct {
	// Wrapped is valid when Err is nil.
	Wrapped Wrapped
	// Err is this item's failure.
	Err error
}

// UnwrapResult is the outcome of one item of Unwrap.
type UnwrapResult struct {
	// Plaintext is set when Err is nil; the caller must Wipe it.
	Plaintext *secret.Key
	// Err is this item's failure.
	Err error
}

// Wrapped is everything a LUKS2 token stores about a wrapped secret. It
// holds no secret: the ciphertext is useless without the KMS.
type Wrapped struct {
	// Backend is the KEK's Backend().
	Backend string `json:"kms"`
	// Key is the KEK's Key().
	Key string `json:"key"`
	// KeyVersion is the key version the ciphertext was made with, as the
	// ciphertext itself says.
	KeyVersion int `json:"key_version"`
	// Ciphertext is the backend's ciphertext string, e.g. "vault:v3:...".
	Ciphertext string `json:"ciphertext"`
}

// KeyInfo describes a key-encryption key.
type KeyInfo struct {
	// Backend and Key name the KEK.
	Backend string `json:"kms"`
	Key     string `json:"key"`
	// LatestVersion is the version new wraps and rewraps use.
	LatestVersion int `json:"latest_version"`
	// MinDecryptionVersion is the oldest version that still unwraps;
	// secrets wrapped with older versions are rejected.
	MinDecryptionVersion int `json:"min_decryption_version"`
}

// Stale reports whether w was wrapped with an older version than the
// newest one, i.e. a rewrap would move it forward.
func (i KeyInfo) Stale(w Wrapped) bool { return w.KeyVersion < i.LatestVersion }
