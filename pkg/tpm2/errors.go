package tpm2

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Errors callers branch on. Each unseal failure the TPM reports is
// classified into one of them; the TPM's own response code stays in the
// chain for the details.
var (
	// ErrNoTPM: there is no TPM at the named device (no /dev/tpmrm0, or
	// nothing listening on the swtpm socket).
	ErrNoTPM = errors.New("no TPM 2.0 found")
	// ErrTPMGone: the TPM stopped answering an open connection (a software
	// TPM that exited, a device that went away).
	ErrTPMGone = errors.New("the TPM stopped answering")
	// ErrPCRMismatch: the PCRs the secret was sealed to hold other values
	// now (firmware, boot loader, kernel or Secure Boot state changed), so
	// the TPM refuses to unseal. Re-sealing needs another factor.
	ErrPCRMismatch = errors.New("the TPM's PCR values no longer match the ones the secret was sealed to")
	// ErrWrongPIN: the TPM rejected the PIN. The TPM counts the failure
	// towards its dictionary-attack lockout.
	ErrWrongPIN = errors.New("the TPM rejected the PIN")
	// ErrLockout: the TPM is in dictionary-attack lockout after too many
	// failed authorizations, and refuses until its recovery time has passed
	// or the lockout is reset with the lockout authorization.
	ErrLockout = errors.New("the TPM is in dictionary-attack lockout")
	// ErrOtherTPM: the TPM cannot load the sealed object: it was sealed by
	// another TPM, or this TPM's owner hierarchy was cleared since.
	ErrOtherTPM = errors.New("not this machine's TPM (the sealed object was made by another TPM, or this TPM was cleared)")
	// ErrOwnerAuth: the TPM's owner hierarchy has an authorization value;
	// systemd's scheme derives its primary key with empty owner
	// authorization, so neither systemd nor atrest can seal or unseal.
	ErrOwnerAuth = errors.New("the TPM's owner hierarchy has a password (systemd's TPM2 scheme needs it empty)")
	// ErrPINRequired: the sealed object needs a PIN and none was given.
	ErrPINRequired = errors.New("the TPM binding needs a PIN")
	// ErrUnsupported: a token or request uses a feature this package does not
	// implement (signed PCR policies, pcrlock, salted PINs, other banks).
	ErrUnsupported = errors.New("unsupported TPM2 binding")
	// ErrBadToken: a systemd-tpm2 token is malformed.
	ErrBadToken = errors.New("malformed systemd-tpm2 token")
)

// classify wraps a TPM error of an unseal-path command into the sentinel
// a caller branches on.
func classify(step string, err error) error {
	var rc tpm2.TPMRC
	if !errors.As(err, &rc) {
		return fmt.Errorf("tpm2: %s: %w", step, err)
	}
	switch {
	case errors.Is(rc, tpm2.TPMRCLockout):
		return fmt.Errorf("%w (%s: %w)", ErrLockout, step, err)
	case errors.Is(rc, tpm2.TPMRCAuthFail), errors.Is(rc, tpm2.TPMRCBadAuth):
		return fmt.Errorf("%w (%s: %w)", ErrWrongPIN, step, err)
	case errors.Is(rc, tpm2.TPMRCPolicyFail), errors.Is(rc, tpm2.TPMRCPolicy):
		return fmt.Errorf("%w (%s: %w)", ErrPCRMismatch, step, err)
	}
	return fmt.Errorf("tpm2: %s: %w", step, err)
}

// classifyLoad is classify for TPM2_Load, whose integrity and value errors
// mean the object was not made under this TPM's primary key.
func classifyLoad(err error) error {
	var rc tpm2.TPMRC
	if errors.As(err, &rc) {
		for _, c := range []tpm2.TPMRC{tpm2.TPMRCIntegrity, tpm2.TPMRCValue, tpm2.TPMRCSize, tpm2.TPMRCKey, tpm2.TPMRCBinding, tpm2.TPMRCSymmetric} {
			if errors.Is(rc, c) {
				return fmt.Errorf("%w (load sealed object: %w)", ErrOtherTPM, err)
			}
		}
	}
	return classify("load sealed object", err)
}
