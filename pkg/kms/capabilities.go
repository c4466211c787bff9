package kms

import (
	"context"

	"github.com/atrest/atrest/pkg/secret"
)

// Optional capabilities. Check for them with a type assertion:
//
//	if r, ok := k.(kms.Rotator); ok { ... }
//
// A node's credentials usually lack the rights behind Rotator and Retirer
// (they belong to an administrator); the methods then fail with
// ErrPermissionDenied.

// Rotator creates a new key version; new wraps and rewraps use it, older
// versions keep unwrapping until retired.
type Rotator interface {
	Rotate(ctx context.Context) (KeyInfo, error)
}

// Retirer moves the minimum decryption version forward: secrets wrapped
// with older versions stop unwrapping (ErrCiphertextRejected). Rewrap every
// token first. Whether the old versions can be brought back depends on the
// backend (Vault keeps them and can lower the minimum again; the local
// keystore destroys them).
type Retirer interface {
	SetMinDecryptionVersion(ctx context.Context, version int) (KeyInfo, error)
}

// Destroyer destroys the key itself, every version of it, for a
// decommission: every secret it wrapped is lost for good. It returns how
// many key objects (or versions) it destroyed.
type Destroyer interface {
	DestroyKey(ctx context.Context) (int, error)
}

// Session is a backend with credentials that expire (Vault tokens).
// KeepAlive renews them, logging in afresh when renewal is no longer
// possible, until ctx is done; long-running processes (atrestd) run it in
// a goroutine. It returns ctx's error, or an ErrAuth or ErrConfig error
// when the credentials cannot be recovered at all.
type Session interface {
	KeepAlive(ctx context.Context) error
}

// Preparer readies a backend for the calls a command is about to make
// (Vault: the login, and the Transit key's check that Wrap makes first),
// so that the caller can overlap that round trip with local work. It
// writes nothing to the KMS's data; its error is the one the next call
// would have met, and a caller that got one reports it instead of making
// that call (which would try again and double the wait).
type Preparer interface {
	Prepare(ctx context.Context) error
}

// Checker diagnoses a backend step by step for `atrest kms check`:
// reachability, authentication, permissions and a probe round trip.
type Checker interface {
	Check(ctx context.Context) []CheckStep
}

// CheckStep is one line of a Checker's report.
type CheckStep struct {
	// Name says what was checked, e.g. "reachable", "auth", "permissions".
	Name string `json:"name"`
	// Detail is what was found, e.g. "vault 1.21.0, unsealed, active".
	Detail string `json:"detail,omitempty"`
	// Err is nil when the step passed; it wraps this package's sentinels.
	Err error `json:"-"`
}

// SecretStore keeps raw secrets per volume in the KMS itself (Vault KV),
// for sites that cannot use a KEK, and reads secrets other tools stored
// (vaultlocker) for adoption.
type SecretStore interface {
	// Put stores s for volume, create-only: an existing secret is never
	// overwritten (ErrSecretExists). s stays the caller's to wipe.
	Put(ctx context.Context, volume string, s *secret.Key) error
	// Get returns the volume's secret (ErrSecretNotFound when there is
	// none). The caller wipes it.
	Get(ctx context.Context, volume string) (*secret.Key, error)
	// Destroy removes every version of the volume's secret for good
	// (crypto-erase of a volume whose secret lives only here).
	Destroy(ctx context.Context, volume string) error
}

// Escrow deposits recovery keys where a node can create but never read
// them back: a compromised node cannot recover other volumes' keys, and
// cannot overwrite or erase an escrowed one.
type Escrow interface {
	// Deposit stores s for volume under id (e.g. the keyslot number and a
	// timestamp), create-only, and returns where it went, for the operator.
	// s stays the caller's to wipe.
	Deposit(ctx context.Context, volume, id string, s *secret.Key) (location string, err error)
	// DepositLocation is the location Deposit(volume, id) returns, known
	// before anything is stored.
	DepositLocation(volume, id string) string
	// CanDeposit asks, writing nothing, whether a Deposit for volume would
	// be allowed now: the escrow answers and the credentials may create
	// there (ErrUnavailable, ErrAuth, ErrPermissionDenied otherwise).
	CanDeposit(ctx context.Context, volume string) error
}
