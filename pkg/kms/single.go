package kms

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/atrest/atrest/pkg/secret"
)

// Wrap wraps one plaintext: a batch of one. The plaintext stays the
// caller's to wipe.
func Wrap(ctx context.Context, k KEK, volume string, plaintext *secret.Key) (Wrapped, error) {
	res, err := k.Wrap(ctx, []WrapRequest{{Context: volume, Plaintext: plaintext}})
	if err != nil {
		return Wrapped{}, err
	}
	if len(res) != 1 {
		return Wrapped{}, fmt.Errorf("%s: wrap returned %d results for 1 request", k.Backend(), len(res))
	}
	return res[0].Wrapped, res[0].Err
}

// Unwrap unwraps one secret: a batch of one. The caller wipes the result.
func Unwrap(ctx context.Context, k KEK, volume string, w Wrapped) (*secret.Key, error) {
	res, err := k.Unwrap(ctx, []UnwrapRequest{{Context: volume, Wrapped: w}})
	if err != nil {
		return nil, err
	}
	if len(res) != 1 {
		for _, r := range res {
			r.Plaintext.Wipe()
		}
		return nil, fmt.Errorf("%s: unwrap returned %d results for 1 request", k.Backend(), len(res))
	}
	return res[0].Plaintext, res[0].Err
}

// Rewrap rewraps one secret to the newest key version: a batch of one.
func Rewrap(ctx context.Context, k KEK, volume string, w Wrapped) (Wrapped, error) {
	res, err := k.Rewrap(ctx, []UnwrapRequest{{Context: volume, Wrapped: w}})
	if err != nil {
		return Wrapped{}, err
	}
	if len(res) != 1 {
		return Wrapped{}, fmt.Errorf("%s: rewrap returned %d results for 1 request", k.Backend(), len(res))
	}
	return res[0].Wrapped, res[0].Err
}

// CiphertextVersion reads the key version from a ciphertext of the form
// "<prefix>:v<version>:<data>" (Vault Transit's form, which the local
// keystore shares).
func CiphertextVersion(prefix, ciphertext string) (int, error) {
	rest, ok := strings.CutPrefix(ciphertext, prefix+":v")
	if !ok {
		return 0, fmt.Errorf("%w: ciphertext does not start with %q", ErrCiphertextRejected, prefix+":v")
	}
	num, _, ok := strings.Cut(rest, ":")
	if !ok {
		return 0, fmt.Errorf("%w: ciphertext has no version field", ErrCiphertextRejected)
	}
	v, err := strconv.Atoi(num)
	if err != nil || v < 1 || strconv.Itoa(v) != num {
		return 0, fmt.Errorf("%w: ciphertext version %q is not a positive number", ErrCiphertextRejected, num)
	}
	return v, nil
}
