package cli

import (
	"errors"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/blockdev/preflight"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/recoverykey"
	"github.com/atrest/atrest/pkg/volume"
)

// Exit codes: the one place they are defined; docs/cli.md lists them and
// every command's --help repeats them.
const (
	ExitOK             = 0  // success
	ExitError          = 1  // an error no other code describes
	ExitUsage          = 2  // bad flags or arguments, missing confirmation
	ExitAttention      = 3  // status: a volume needs attention (stale key version, no backup, ...)
	ExitRefused        = 4  // the device holds data or is in use; nothing was changed
	ExitNotFound       = 5  // no such device, volume, name or UUID
	ExitNotLUKS2       = 6  // not a LUKS2 volume (no header, LUKS1), or not an atrest volume
	ExitDamaged        = 7  // the LUKS2 header is damaged (both copies); restore a backup
	ExitKeyRejected    = 8  // the passphrase or recovery key opens no keyslot
	ExitKMSUnavailable = 9  // the KMS cannot be reached (network, sealed, timeout)
	ExitKMSDenied      = 10 // the KMS refused the credentials or the operation
	ExitKMSKey         = 11 // the KEK is missing or rejected this volume's token
	ExitConfig         = 12 // the configuration file is invalid or insecure
	ExitBusy           = 13 // the mapping is in use, or another atrest process holds the volume
	ExitNoDM           = 14 // this kernel has no device-mapper
	ExitPartial        = 15 // failed part-way; the message says what state the device is in
)

// ExitCodes describes every code, for --help and docs.
var ExitCodes = []struct {
	Code int
	Text string
}{
	{ExitOK, "success"},
	{ExitError, "an error no other code describes"},
	{ExitUsage, "bad flags or arguments, or a missing confirmation"},
	{ExitAttention, "status only: a volume needs attention"},
	{ExitRefused, "the device holds data or is in use; nothing was changed"},
	{ExitNotFound, "no such device, volume name or UUID"},
	{ExitNotLUKS2, "not a LUKS2 volume (no header, or LUKS1), or not an atrest volume"},
	{ExitDamaged, "both LUKS2 header copies are damaged"},
	{ExitKeyRejected, "the passphrase or recovery key opens no keyslot"},
	{ExitKMSUnavailable, "the KMS cannot be reached"},
	{ExitKMSDenied, "the KMS refused the credentials or the operation"},
	{ExitKMSKey, "the KEK is missing, or the KMS rejected this volume's token"},
	{ExitConfig, "the configuration file is invalid or insecure"},
	{ExitBusy, "the mapping is in use, or another atrest process holds the volume"},
	{ExitNoDM, "this kernel has no device-mapper"},
	{ExitPartial, "failed part-way; the message says what state the device is in"},
}

// class is what the CLI knows about an error: its exit code, a short kind
// for JSON output, and a hint where a fix is known.
type class struct {
	code int
	kind string
	hint string
}

// rules are tried in order; the first whose sentinel the error wraps wins.
// More specific conditions come first.
var rules = []struct {
	err error
	class
}{
	{volume.ErrNotConfirmed, class{ExitUsage, "not-confirmed", ""}},
	{volume.ErrInvalidArgument, class{ExitUsage, "usage", ""}},
	{recoverykey.ErrMalformed, class{ExitKeyRejected, "key-rejected", "a recovery key is 8 groups of 8 letters from cbdefghijklnrtuv"}},
	{config.ErrInsecure, class{ExitConfig, "config-insecure", ""}},
	{kms.ErrConfig, class{ExitConfig, "config", "check the kms section of the configuration file"}},
	{dmcrypt.ErrNoDeviceMapper, class{ExitNoDM, "no-device-mapper", "load dm-crypt (modprobe dm_crypt), or run where device-mapper exists (the real-kernel test tier does)"}},
	{volume.ErrLocked, class{ExitBusy, "locked", "wait for the other atrest process to finish"}},
	{dmcrypt.ErrBusy, class{ExitBusy, "busy", "unmount the filesystem (and stop what uses the device) first"}},
	{blockdev.ErrInUse, class{ExitRefused, "in-use", "unmount it, swapoff it, or close what is stacked on it; --force does not override this"}},
	{blockdev.ErrBusy, class{ExitRefused, "in-use", "another program holds the device open exclusively"}},
	{preflight.ErrSignatures, class{ExitRefused, "has-data", "if the data may be destroyed, run again with --force"}},
	{preflight.ErrNonZero, class{ExitRefused, "has-data", "if the data may be destroyed, run again with --force"}},
	{volume.ErrAlreadyManaged, class{ExitRefused, "already-managed", ""}},
	{volume.ErrNameInUse, class{ExitRefused, "name-in-use", "choose another --name"}},
	{blockdev.ErrReadOnly, class{ExitRefused, "read-only", ""}},
	{luks2.ErrLUKS1, class{ExitNotLUKS2, "luks1", "convert it first: cryptsetup convert --type luks2 DEVICE (after a header backup)"}},
	{luks2.ErrNotLUKS, class{ExitNotLUKS2, "not-luks", ""}},
	{volume.ErrNotManaged, class{ExitNotLUKS2, "not-managed", "take it over with: atrest adopt DEVICE --name NAME"}},
	{luks2.ErrHeaderDamaged, class{ExitDamaged, "header-damaged", "restore a header backup: atrest header restore DEVICE --backup FILE"}},
	{luks2.ErrKeyRejected, class{ExitKeyRejected, "key-rejected", ""}},
	{kms.ErrUnavailable, class{ExitKMSUnavailable, "kms-unavailable", "check the network and the KMS (atrest kms check); the recovery key opens the volume meanwhile (atrest recovery unlock)"}},
	{kms.ErrAuth, class{ExitKMSDenied, "kms-auth", "check the node's Vault credentials (atrest kms check)"}},
	{kms.ErrPermissionDenied, class{ExitKMSDenied, "kms-denied", "the node's Vault policy does not allow this (docs/vault.md has the policy)"}},
	{kms.ErrKeyNotFound, class{ExitKMSKey, "kms-key-not-found", "if the KEK is gone for good, reseal with the recovery key: atrest recovery reseal NAME"}},
	{kms.ErrUnknownBackend, class{ExitKMSKey, "kms-key-not-found", "the token names a KMS this node is not configured for; reseal with the recovery key: atrest recovery reseal NAME"}},
	{kms.ErrCiphertextRejected, class{ExitKMSKey, "kms-rejected", "the token does not belong to this volume or its key version was retired; reseal with the recovery key: atrest recovery reseal NAME"}},
	{kms.ErrSecretNotFound, class{ExitKMSKey, "kms-secret-not-found", ""}},
	{volume.ErrNotFound, class{ExitNotFound, "not-found", ""}},
	{blockdev.ErrNotFound, class{ExitNotFound, "not-found", ""}},
	{volume.ErrNoRecovery, class{ExitNotFound, "no-recovery", ""}},
	{luks2.ErrDeviceTooSmall, class{ExitRefused, "too-small", "atrest needs more than 16 MiB (the header) plus data"}},
}

// classify maps err to its class.
func classify(err error) class {
	var cfgErr *config.Error
	if errors.As(err, &cfgErr) {
		return class{ExitConfig, "config", ""}
	}
	var stage *volume.StageError
	partial := errors.As(err, &stage)
	for _, r := range rules {
		if errors.Is(err, r.err) {
			c := r.class
			if partial && c.code != ExitKMSUnavailable && c.code != ExitKMSDenied && c.code != ExitKMSKey {
				c.code, c.kind = ExitPartial, "partial"
			}
			return c
		}
	}
	if partial {
		return class{ExitPartial, "partial", ""}
	}
	var usage *usageError
	if errors.As(err, &usage) {
		return class{ExitUsage, "usage", usage.hint}
	}
	return class{ExitError, "error", ""}
}

// usageError is a bad invocation.
type usageError struct {
	msg, hint string
}

func (e *usageError) Error() string { return e.msg }

func usagef(hint, msg string) error { return &usageError{msg: msg, hint: hint} }
