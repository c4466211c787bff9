package kms

import (
	"errors"
	"fmt"
)

// Sentinel errors. Backends wrap them (errors.Is works through any wrapping)
// in messages that say what happened — timeout, connection refused, sealed,
// HTTP status, rate limited — and never include a secret or a token.
var (
	// ErrUnavailable: the KMS could not be reached or could not serve the
	// request (connection refused, timeout, sealed, 5xx, 429), even after
	// retrying until the deadline. Trying again later may succeed.
	ErrUnavailable = errors.New("kms unavailable")
	// ErrAuth: the KMS rejected atrest's credentials (wrong AppRole
	// role_id or secret_id, expired or revoked token that could not be
	// renewed or replaced by a fresh login). Fix the credentials.
	ErrAuth = errors.New("kms authentication failed")
	// ErrPermissionDenied: the credentials are valid but the KMS policy
	// does not allow this operation.
	ErrPermissionDenied = errors.New("kms permission denied")
	// ErrKeyNotFound: the key-encryption key does not exist in the KMS, or
	// a token names a backend or key other than the one asked to unwrap it.
	ErrKeyNotFound = errors.New("kms key not found")
	// ErrCiphertextRejected: the KMS refused to unwrap a ciphertext: wrong
	// context (another volume's token), tampered or malformed ciphertext,
	// or a key version below the minimum decryption version.
	ErrCiphertextRejected = errors.New("kms rejected the ciphertext")
	// ErrSecretNotFound: no secret is stored at the requested place.
	ErrSecretNotFound = errors.New("kms secret not found")
	// ErrSecretExists: a create-only store found a secret already there.
	ErrSecretExists = errors.New("kms secret already exists")
	// ErrInvalidRequest: the request itself is malformed (empty context,
	// nil plaintext); a bug in the caller, not a KMS condition.
	ErrInvalidRequest = errors.New("invalid kms request")
	// ErrConfig: the backend's configuration is unusable (missing address,
	// unreadable or too widely readable credential file).
	ErrConfig = errors.New("invalid kms configuration")
	// ErrUnknownBackend: a Registry holds no KEK for a token's backend and key.
	ErrUnknownBackend = errors.New("no kms configured for this token")
)

// Transient reports whether err is worth retrying later: only ErrUnavailable.
func Transient(err error) bool { return errors.Is(err, ErrUnavailable) }

// CheckRequests validates the parts of a batch every backend relies on.
func CheckRequests(reqs []WrapRequest) error {
	for i, r := range reqs {
		if r.Context == "" {
			return fmt.Errorf("%w: item %d has an empty context (the volume UUID)", ErrInvalidRequest, i)
		}
		if r.Plaintext.Len() == 0 {
			return fmt.Errorf("%w: item %d has no plaintext (nil or wiped)", ErrInvalidRequest, i)
		}
	}
	return nil
}

// CheckUnwrapRequests validates an Unwrap or Rewrap batch for KEK k:
// contexts must be set and every token must name k's backend and key.
// A token for another backend or key is a per-item ErrKeyNotFound, which
// the returned slice records (nil entries for good items).
func CheckUnwrapRequests(k KEK, reqs []UnwrapRequest) ([]error, error) {
	var itemErrs []error
	for i, r := range reqs {
		if r.Context == "" {
			return nil, fmt.Errorf("%w: item %d has an empty context (the volume UUID)", ErrInvalidRequest, i)
		}
		if r.Wrapped.Backend != k.Backend() || r.Wrapped.Key != k.Key() {
			if itemErrs == nil {
				itemErrs = make([]error, len(reqs))
			}
			itemErrs[i] = fmt.Errorf("%w: token was wrapped by %s key %q, this kms is %s key %q",
				ErrKeyNotFound, r.Wrapped.Backend, r.Wrapped.Key, k.Backend(), k.Key())
		}
	}
	if itemErrs == nil {
		itemErrs = make([]error, len(reqs))
	}
	return itemErrs, nil
}
