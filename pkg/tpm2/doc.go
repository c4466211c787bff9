// Package tpm2 seals and unseals secrets with a TPM 2.0 the way systemd 252
// does, so that atrest and systemd-cryptenroll/systemd-cryptsetup share one
// keyslot format.
//
// It owns: opening a TPM (the kernel's /dev/tpmrm0, or a software TPM on a
// TCP socket such as swtpm, named like systemd's TCTI), the primary key from
// systemd's fixed template (ECC P-256, or RSA-2048 where the token says so),
// sealing a fresh 32-byte secret under a PolicyPCR (one bank, a PCR list)
// with an optional PolicyAuthValue (a PIN), unsealing it, reading PCRs,
// classifying the TPM's refusals (ErrPCRMismatch, ErrWrongPIN, ErrLockout,
// ErrOtherTPM, ErrOwnerAuth, ErrNoTPM, ErrTPMGone; docs/tpm.md), and the systemd-tpm2 LUKS2 token (Token) with the
// keyslot passphrase systemd derives from the secret (Passphrase).
//
// What an unseal returns lands in a secret.Key and nowhere else that this
// package controls: the transport wipes the command and response buffers of
// Create and Unseal as soon as go-tpm has parsed them, and the secret travels between host and TPM
// encrypted by a salted session (AES-128-CFB parameter encryption), as
// systemd does. go-tpm's own marshalling makes short-lived heap copies of
// the command being built; those cannot be wiped from here (docs/tpm.md).
package tpm2
