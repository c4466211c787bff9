package tpm2

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/atrest/atrest/pkg/secret"
)

// SecretSize is the length of the secret Seal generates (systemd's 32
// bytes).
const SecretSize = 32

// Sealed describes a sealed secret: everything a systemd-tpm2 token holds
// except its keyslot.
type Sealed struct {
	// Blob is the sealed object: TPM2B_PRIVATE followed by TPM2B_PUBLIC,
	// as systemd marshals it.
	Blob []byte
	// Bank and PCRs are the PolicyPCR selection (PCRs sorted ascending).
	Bank Bank
	PCRs []int
	// PrimaryAlg names the primary key's template.
	PrimaryAlg PrimaryAlg
	// PolicyHash is the policy digest (SHA-256) the object was sealed to.
	PolicyHash []byte
	// PIN: the policy also needs the PIN (PolicyAuthValue).
	PIN bool
}

// SealOptions choose the policy of a new sealed secret.
type SealOptions struct {
	// Bank of the PCRs; when empty, the one systemd would pick (sha256
	// unless only sha1 has measurements in the selected PCRs).
	Bank Bank
	// PCRs to bind to; may be empty (then only the TPM itself binds).
	PCRs []int
	// PIN, when not nil, is also needed to unseal (UTF-8, no newline).
	// The caller wipes it.
	PIN *secret.Key
	// PrimaryAlg of the primary key; empty tries ECC, then RSA.
	PrimaryAlg PrimaryAlg
}

// SealResult is what Seal reports beyond the sealed object.
type SealResult struct {
	Sealed
	// Unenforced: every selected PCR is all zeros or all ones, that is no
	// firmware measured into it, so the PCR policy binds to nothing.
	Unenforced bool
}

// Seal generates a random secret of SecretSize bytes and seals it under the
// PCRs' current values (and the PIN, if given), exactly as systemd 252's
// tpm2_seal does. It returns the secret (the caller wipes it) and the
// sealed object.
func (t *TPM) Seal(opts SealOptions) (*secret.Key, *SealResult, error) {
	pcrs, err := checkPCRs(opts.PCRs)
	if err != nil {
		return nil, nil, err
	}
	bank := opts.Bank
	if bank == "" {
		if bank, err = t.bestBank(pcrs); err != nil {
			return nil, nil, err
		}
	}
	values, err := t.ReadPCRs(bank, pcrs)
	if err != nil {
		return nil, nil, err
	}
	policy, err := PolicyDigest(bank, pcrs, values, opts.PIN != nil)
	if err != nil {
		return nil, nil, err
	}
	var pinHash *secret.Key
	if opts.PIN != nil {
		if pinHash, err = hashPIN(opts.PIN); err != nil {
			return nil, nil, err
		}
		defer pinHash.Wipe()
	}
	p, err := t.createPrimary(opts.PrimaryAlg)
	if err != nil {
		return nil, nil, err
	}
	defer t.flush(p.handle)
	sec, err := secret.Random(SecretSize)
	if err != nil {
		return nil, nil, err
	}
	sensitive := &tpm2.TPMSSensitiveCreate{
		Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: sec.Bytes()}),
	}
	if pinHash != nil {
		sensitive.UserAuth = tpm2.TPM2BAuth{Buffer: pinHash.Bytes()}
	}
	// The parent's authorization session is salted with the primary key and
	// encrypts the first parameter, the sensitive data, on its way in.
	parent := p.authHandle()
	parent.Auth = tpm2.HMAC(tpm2.TPMAlgSHA256, nonceSize,
		tpm2.Salted(p.handle, p.pub), tpm2.AESEncryption(128, tpm2.EncryptIn))
	rsp, err := (tpm2.Create{
		ParentHandle: parent,
		InSensitive:  tpm2.TPM2BSensitiveCreate{Sensitive: sensitive},
		InPublic:     tpm2.New2B(sealedTemplate(policy)),
	}).Execute(t.t)
	t.t.wipe()
	if err != nil {
		sec.Wipe()
		return nil, nil, classify("create sealed object", err)
	}
	blob := append(tpm2.Marshal(rsp.OutPrivate), tpm2.Marshal(rsp.OutPublic)...)
	return sec, &SealResult{
		Sealed: Sealed{
			Blob: blob, Bank: bank, PCRs: pcrs, PrimaryAlg: p.alg,
			PolicyHash: policy, PIN: opts.PIN != nil,
		},
		Unenforced: unenforced(values),
	}, nil
}

// sealedTemplate is systemd's: a keyed-hash data object, fixed to this TPM
// and parent, authorized only through its policy (userWithAuth clear).
func sealedTemplate(policy []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgKeyedHash,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true},
		AuthPolicy:       tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: make([]byte, 32)}),
	}
}

// hashPIN is systemd 252's hash_pin: the auth value is SHA-256 of the PIN.
func hashPIN(pin *secret.Key) (*secret.Key, error) {
	if pin.Len() == 0 {
		return nil, fmt.Errorf("tpm2: empty PIN")
	}
	out, err := secret.New(sha256.Size)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write(pin.Bytes())
	h.Sum(out.Bytes()[:0])
	return out, nil
}

// splitBlob parses TPM2B_PRIVATE || TPM2B_PUBLIC. Nothing may follow.
func splitBlob(blob []byte) (tpm2.TPM2BPrivate, tpm2.TPM2BPublic, *tpm2.TPMTPublic, error) {
	var priv tpm2.TPM2BPrivate
	var pub tpm2.TPM2BPublic
	if len(blob) < 2 {
		return priv, pub, nil, fmt.Errorf("%w: tpm2-blob of %d bytes", ErrBadToken, len(blob))
	}
	n := int(binary.BigEndian.Uint16(blob))
	if len(blob) < 2+n+2 {
		return priv, pub, nil, fmt.Errorf("%w: tpm2-blob is shorter than its private part", ErrBadToken)
	}
	m := int(binary.BigEndian.Uint16(blob[2+n:]))
	if len(blob) != 2+n+2+m {
		return priv, pub, nil, fmt.Errorf("%w: tpm2-blob is %d bytes, its parts say %d", ErrBadToken, len(blob), 2+n+2+m)
	}
	priv = tpm2.TPM2BPrivate{Buffer: bytes.Clone(blob[2 : 2+n])}
	p, err := tpm2.Unmarshal[tpm2.TPM2BPublic](blob[2+n:])
	if err != nil {
		return priv, pub, nil, fmt.Errorf("%w: tpm2-blob's public part: %w", ErrBadToken, err)
	}
	contents, err := p.Contents()
	if err != nil {
		return priv, pub, nil, fmt.Errorf("%w: tpm2-blob's public part: %w", ErrBadToken, err)
	}
	return priv, *p, contents, nil
}

// Unseal asks the TPM for the secret s holds and returns it (the caller
// wipes it). pin must be given when s.PIN is set. Failures wrap ErrNoTPM,
// ErrPCRMismatch (checked before the TPM is asked, so a changed PCR does
// not count towards the lockout), ErrWrongPIN, ErrLockout, ErrOtherTPM,
// ErrPINRequired or ErrBadToken.
func (t *TPM) Unseal(s *Sealed, pin *secret.Key) (*secret.Key, error) {
	if s.PIN && pin == nil {
		return nil, ErrPINRequired
	}
	alg, pcrs, err := checkSelection(s.Bank, s.PCRs)
	if err != nil {
		return nil, err
	}
	priv, pub, contents, err := splitBlob(s.Blob)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(contents.AuthPolicy.Buffer, s.PolicyHash) {
		return nil, fmt.Errorf("%w: tpm2-policy-hash is not the sealed object's policy", ErrBadToken)
	}
	var auth *secret.Key
	if s.PIN {
		if auth, err = hashPIN(pin); err != nil {
			return nil, err
		}
		defer auth.Wipe()
	}
	p, err := t.createPrimary(s.PrimaryAlg)
	if err != nil {
		return nil, err
	}
	defer t.flush(p.handle)
	loaded, err := (tpm2.Load{ParentHandle: p.authHandle(), InPrivate: priv, InPublic: pub}).Execute(t.t)
	if err != nil {
		return nil, classifyLoad(err)
	}
	defer t.flush(loaded.ObjectHandle)

	sess, err := t.startPinSession()
	if err != nil {
		return nil, err
	}
	defer func() {
		if sess.handle != tpm2.TPMRHNull {
			t.flush(sess.handle)
		}
	}()
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.handle, Pcrs: selection(alg, pcrs)}).Execute(t.t); err != nil {
		return nil, classify("PolicyPCR", err)
	}
	if s.PIN {
		if _, err := (tpm2.PolicyAuthValue{PolicySession: sess.handle}).Execute(t.t); err != nil {
			return nil, classify("PolicyAuthValue", err)
		}
		sess.setAuth(auth.Bytes())
	}
	got, err := (tpm2.PolicyGetDigest{PolicySession: sess.handle}).Execute(t.t)
	if err != nil {
		return nil, classify("PolicyGetDigest", err)
	}
	if !bytes.Equal(got.PolicyDigest.Buffer, s.PolicyHash) {
		return nil, fmt.Errorf("%w (bank %s, PCRs %v)", ErrPCRMismatch, s.Bank, pcrs)
	}
	// A second, salted session encrypts the response: the secret crosses
	// the bus encrypted.
	enc := tpm2.HMAC(tpm2.TPMAlgSHA256, nonceSize,
		tpm2.Salted(p.handle, p.pub), tpm2.AESEncryption(128, tpm2.EncryptOut))
	rsp, err := (tpm2.Unseal{ItemHandle: tpm2.AuthHandle{
		Handle: loaded.ObjectHandle, Name: loaded.Name, Auth: sess,
	}}).Execute(t.t, enc)
	t.t.wipe()
	if err != nil {
		return nil, classify("unseal", err)
	}
	defer clear(rsp.OutData.Buffer)
	if len(rsp.OutData.Buffer) == 0 {
		return nil, fmt.Errorf("tpm2: the TPM unsealed an empty secret")
	}
	return secret.FromBytes(rsp.OutData.Buffer)
}
