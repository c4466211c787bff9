package tpm2

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// PrimaryAlg is the algorithm of the primary key, as systemd's tokens spell
// it ("tpm2-primary-alg").
type PrimaryAlg string

// The primary key algorithms of systemd 252's templates.
const (
	ECC PrimaryAlg = "ecc"
	RSA PrimaryAlg = "rsa"
)

// primaryTemplate is systemd 252's template (tpm2_make_primary): a
// restricted decryption key under the owner hierarchy, AES-128-CFB for its
// children, no scheme, an empty unique field, and without noDA. The TPM
// derives the same key from its owner seed and this template every time,
// which is why the template must match systemd's to the byte.
func primaryTemplate(alg PrimaryAlg) (tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, Restricted: true, Decrypt: true,
	}
	sym := tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
	switch alg {
	case ECC:
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: sym,
				Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
				CurveID:   tpm2.TPMECCNistP256,
				KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}, nil
	case RSA:
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: sym,
				Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
				KeyBits:   2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}, nil
	}
	return tpm2.TPMTPublic{}, fmt.Errorf("%w: primary key algorithm %q (systemd 252 knows ecc and rsa)", ErrUnsupported, string(alg))
}

// primary is a loaded primary key; flush releases it.
type primary struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	pub    tpm2.TPMTPublic
	alg    PrimaryAlg
}

func (p *primary) authHandle() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: p.handle, Name: p.name, Auth: tpm2.PasswordAuth(nil)}
}

// createPrimary derives the primary key of alg; with alg "" it tries ECC
// and falls back to RSA, as systemd does for TPMs without ECC.
func (t *TPM) createPrimary(alg PrimaryAlg) (*primary, error) {
	if alg == "" {
		p, err := t.createPrimary(ECC)
		if err == nil || errors.Is(err, ErrOwnerAuth) || errors.Is(err, ErrLockout) {
			return p, err
		}
		return t.createPrimary(RSA)
	}
	tmpl, err := primaryTemplate(alg)
	if err != nil {
		return nil, err
	}
	rsp, err := (tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}).Execute(t.t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail) {
			return nil, fmt.Errorf("%w (create %s primary key: %w)", ErrOwnerAuth, alg, err)
		}
		return nil, classify(fmt.Sprintf("create %s primary key", alg), err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		t.flush(rsp.ObjectHandle)
		return nil, fmt.Errorf("tpm2: primary key's public area: %w", err)
	}
	return &primary{handle: rsp.ObjectHandle, name: rsp.Name, pub: *pub, alg: alg}, nil
}

// flush releases a transient object or session; errors are ignored (the
// handle may be gone already, and the resource manager flushes on close).
func (t *TPM) flush(h tpm2.TPMHandle) {
	_, _ = (tpm2.FlushContext{FlushHandle: h}).Execute(t.t)
}
