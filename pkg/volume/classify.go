package volume

import (
	"context"
	"errors"
	"io/fs"
	"slices"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/blockdev/preflight"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/recoverykey"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
	"github.com/atrest/atrest/pkg/tpm2"
)

// Kind is what an error means to a caller that must act on it. It is the
// one classification of atrest's errors: the CLI maps each kind to an exit
// code and a hint, atrestd to a metric label and its status line, so the
// two cannot disagree. Its values are the "kind" field of the CLI's JSON
// errors (docs/cli.md), except for four kinds whose older, coarser names
// the CLI keeps (internal/cli/errors.go).
type Kind string

// The kinds, most specific first where one error can match several.
const (
	KindNotConfirmed      Kind = "not-confirmed"
	KindUsage             Kind = "usage"
	KindEmptyInput        Kind = "empty-input"
	KindUUIDMismatch      Kind = "uuid-mismatch"
	KindMalformedRecovery Kind = "malformed-recovery-key"
	KindConfigInsecure    Kind = "config-insecure"
	KindConfig            Kind = "config"
	KindKMSConfig         Kind = "kms-config"
	KindMemoryLock        Kind = "memory-lock"
	KindNoDeviceMapper    Kind = "no-device-mapper"
	KindNoMapperNode      Kind = "no-mapper-node"
	KindLocked            Kind = "locked"
	KindMappingBusy       Kind = "busy"
	KindInUse             Kind = "in-use"
	KindHeldExclusively   Kind = "held-exclusively"
	KindHasData           Kind = "has-data"
	KindAlreadyManaged    Kind = "already-managed"
	KindNameInUse         Kind = "name-in-use"
	KindReadOnly          Kind = "read-only"
	KindTooSmall          Kind = "too-small"
	KindLUKS1             Kind = "luks1"
	KindNotLUKS           Kind = "not-luks"
	KindNotManaged        Kind = "not-managed"
	KindBadToken          Kind = "bad-token"
	KindHeaderDamaged     Kind = "header-damaged"
	KindHeaderUnreadable  Kind = "header-unreadable"
	KindAmbiguous         Kind = "ambiguous-signatures"
	KindDeviceChanged     Kind = "device-changed"
	KindKeyRejected       Kind = "key-rejected"
	KindVerify            Kind = "verify-failed"
	KindKMSUnavailable    Kind = "kms-unavailable"
	KindKMSAuth           Kind = "kms-auth"
	KindKMSDenied         Kind = "kms-denied"
	KindKMSKeyNotFound    Kind = "kms-key-not-found"
	KindKMSUnknownBackend Kind = "kms-unknown-backend"
	KindKMSRejected       Kind = "kms-rejected"
	KindKMSSecretNotFound Kind = "kms-secret-not-found"
	KindNoTPM             Kind = "no-tpm"
	KindTPMGone           Kind = "tpm-gone"
	KindPCRMismatch       Kind = "tpm-pcr-mismatch"
	KindTPMLockout        Kind = "tpm-lockout"
	KindOtherTPM          Kind = "tpm-other"
	KindWrongPIN          Kind = "tpm-wrong-pin"
	KindTPMBadToken       Kind = "tpm-bad-token"
	KindTPMUnsupported    Kind = "tpm-unsupported"
	KindNotFound          Kind = "not-found"
	KindNotADevice        Kind = "not-a-device"
	KindNoRecovery        Kind = "no-recovery"
	KindReencrypting      Kind = "reencrypting"
	KindBackupStale       Kind = "backup-stale"
	KindAlreadyLUKS       Kind = "already-luks"
	KindFSUnsupported     Kind = "fs-unsupported"
	KindFSTooLarge        Kind = "fs-too-large"
	KindOther             Kind = "error"
)

// Failure is the classification of one error.
type Failure struct {
	Kind Kind
	// Partial: the use case failed part-way (a *StageError) for a reason
	// on this side (the device, atrest); its message says what state the
	// device is in. A failure whose remedy lies elsewhere (the KMS, the
	// locked-memory limit: Kind.Elsewhere) keeps its kind instead.
	Partial bool
}

// IsKMS reports whether the KMS is what to fix: such a failure keeps its
// kind even part-way, since retrying once the KMS answers is the remedy.
func (k Kind) IsKMS() bool {
	switch k {
	case KindKMSUnavailable, KindKMSAuth, KindKMSDenied, KindKMSKeyNotFound,
		KindKMSUnknownBackend, KindKMSRejected, KindKMSSecretNotFound:
		return true
	}
	return false
}

// IsTPM reports whether the TPM is what to fix (kms: tpm and TPM
// keyslots): like a KMS failure, such a failure keeps its kind part-way.
func (k Kind) IsTPM() bool {
	switch k {
	case KindNoTPM, KindTPMGone, KindPCRMismatch, KindTPMLockout, KindOtherTPM, KindWrongPIN, KindTPMBadToken, KindTPMUnsupported:
		return true
	}
	return false
}

// Elsewhere reports whether the remedy lies outside the device and
// atrest: the KMS or the TPM, or the process's locked-memory limit. Such
// a failure keeps its kind when a use case failed part-way.
func (k Kind) Elsewhere() bool { return k.IsKMS() || k.IsTPM() || k == KindMemoryLock }

// kindRules are tried in order; the first sentinel the error wraps wins.
var kindRules = []struct {
	err  error
	kind Kind
}{
	{ErrNotConfirmed, KindNotConfirmed},
	{ErrInvalidArgument, KindUsage},
	{secret.ErrEmpty, KindEmptyInput},
	{luks2.ErrUUIDMismatch, KindUUIDMismatch},
	{recoverykey.ErrMalformed, KindMalformedRecovery},
	{config.ErrInsecure, KindConfigInsecure},
	{config.ErrUnreadable, KindConfig},
	{secret.ErrMemoryLock, KindMemoryLock},
	{kms.ErrConfig, KindKMSConfig},
	{dmcrypt.ErrNoDeviceMapper, KindNoDeviceMapper},
	{dmcrypt.ErrNoNode, KindNoMapperNode},
	{ErrLocked, KindLocked},
	{ErrReencrypting, KindReencrypting},
	{luks2.ErrBackupStale, KindBackupStale},
	{dmcrypt.ErrBusy, KindMappingBusy},
	{blockdev.ErrInUse, KindInUse},
	{blockdev.ErrBusy, KindHeldExclusively},
	{dmcrypt.ErrBackingBusy, KindHeldExclusively},
	{preflight.ErrSignatures, KindHasData},
	{preflight.ErrNonZero, KindHasData},
	{ErrAlreadyManaged, KindAlreadyManaged},
	{ErrAlreadyLUKS, KindAlreadyLUKS},
	{ErrFSUnsupported, KindFSUnsupported},
	{ErrFSTooLarge, KindFSTooLarge},
	{ErrNameInUse, KindNameInUse},
	{blockdev.ErrReadOnly, KindReadOnly},
	{luks2.ErrDeviceTooSmall, KindTooSmall},
	{luks2.ErrHeaderUnreadable, KindHeaderUnreadable},
	{luks2.ErrLUKS1, KindLUKS1},
	{luks2.ErrNotLUKS, KindNotLUKS},
	{ErrNotManaged, KindNotManaged},
	{token.ErrInvalid, KindBadToken},
	{luks2.ErrAmbiguousSignatures, KindAmbiguous},
	{luks2.ErrHeaderDamaged, KindHeaderDamaged},
	{ErrDeviceChanged, KindDeviceChanged},
	// The TPM's own failures, before the KMS kinds they may travel with.
	{tpm2.ErrNoTPM, KindNoTPM},
	{tpm2.ErrTPMGone, KindTPMGone},
	{tpm2.ErrPCRMismatch, KindPCRMismatch},
	{tpm2.ErrLockout, KindTPMLockout},
	{tpm2.ErrOtherTPM, KindOtherTPM},
	{tpm2.ErrWrongPIN, KindWrongPIN},
	{tpm2.ErrBadToken, KindTPMBadToken},
	{tpm2.ErrUnsupported, KindTPMUnsupported},
	{kms.ErrUnavailable, KindKMSUnavailable},
	{context.DeadlineExceeded, KindKMSUnavailable},
	{kms.ErrAuth, KindKMSAuth},
	{kms.ErrPermissionDenied, KindKMSDenied},
	{kms.ErrKeyNotFound, KindKMSKeyNotFound},
	{kms.ErrUnknownBackend, KindKMSUnknownBackend},
	{kms.ErrCiphertextRejected, KindKMSRejected},
	{kms.ErrSecretNotFound, KindKMSSecretNotFound},
	// After the KMS kinds: new key material that did not verify because
	// the KMS failed is the KMS's failure; any other cause (the keyslot
	// did not open) is not the caller's key being rejected.
	{ErrVerify, KindVerify},
	{luks2.ErrKeyRejected, KindKeyRejected},
	{ErrNotFound, KindNotFound},
	{blockdev.ErrNotFound, KindNotFound},
	{fs.ErrNotExist, KindNotFound},
	{blockdev.ErrUnsupported, KindNotADevice},
	{ErrNoRecovery, KindNoRecovery},
}

// Classify says what err means. Errors of a configuration file's content
// (*config.Error) are KindConfig.
func Classify(err error) Failure {
	var stage *StageError
	f := Failure{Kind: KindOther, Partial: errors.As(err, &stage)}
	var cfgErr *config.Error
	if errors.As(err, &cfgErr) {
		f.Kind = KindConfig
		return f
	}
	for _, r := range kindRules {
		if errors.Is(err, r.err) {
			f.Kind = r.kind
			break
		}
	}
	f.Partial = f.Partial && !f.Kind.Elsewhere()
	return f
}

// Kinds lists every kind Classify returns, for the mappers' tests: each
// must map every kind.
func Kinds() []Kind {
	out := []Kind{KindOther}
	for _, r := range kindRules {
		if !slices.Contains(out, r.kind) {
			out = append(out, r.kind)
		}
	}
	return out
}
