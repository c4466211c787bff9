package tpm2

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// pinSession is an unsalted, unbound policy session that authorizes
// TPM2_Unseal. It exists because go-tpm v0.9.8 derives the HMAC key from an
// auth value by cutting it at its first zero byte, where the TPM only drops
// trailing zeros (Part 1, 19.6.5): with a PIN whose SHA-256 has a zero byte
// inside (about one PIN in eight), go-tpm's session sends a wrong HMAC and
// the TPM rejects the right PIN. Without salt or bind the session key is
// empty, so the HMAC key is the auth value alone.
//
// It does no parameter encryption; a separate salted HMAC session encrypts
// the unsealed secret on its way out of the TPM.
type pinSession struct {
	handle      tpm2.TPMHandle
	nonceCaller tpm2.TPM2BNonce
	nonceTPM    tpm2.TPM2BNonce
	auth        []byte // the object's auth value, trailing zeros dropped; nil without PIN
}

var _ tpm2.Session = (*pinSession)(nil)

const nonceSize = 16

// startPinSession starts the policy session on the TPM.
func (t *TPM) startPinSession() (*pinSession, error) {
	s := &pinSession{nonceCaller: tpm2.TPM2BNonce{Buffer: make([]byte, nonceSize)}}
	if _, err := rand.Read(s.nonceCaller.Buffer); err != nil {
		return nil, err
	}
	rsp, err := (tpm2.StartAuthSession{
		TPMKey:      tpm2.TPMRHNull,
		Bind:        tpm2.TPMRHNull,
		NonceCaller: s.nonceCaller,
		SessionType: tpm2.TPMSEPolicy,
		Symmetric:   tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		AuthHash:    tpm2.TPMAlgSHA256,
	}).Execute(t.t)
	if err != nil {
		return nil, classify("start policy session", err)
	}
	s.handle = tpm2.TPMHandle(rsp.SessionHandle.HandleValue())
	s.nonceTPM = rsp.NonceTPM
	return s, nil
}

// setAuth sets the auth value the HMACs prove knowledge of. auth stays
// owned by the caller (locked memory), which wipes it.
func (s *pinSession) setAuth(auth []byte) {
	n := len(auth)
	for n > 0 && auth[n-1] == 0 {
		n--
	}
	s.auth = auth[:n]
}

// Init implements tpm2.Session; the session is started already.
func (s *pinSession) Init(transport.TPM) error {
	if s.handle == 0 || s.handle == tpm2.TPMRHNull {
		return errors.New("tpm2: policy session already used")
	}
	return nil
}

// CleanupFailure implements tpm2.Session; the caller flushes the session.
func (s *pinSession) CleanupFailure(transport.TPM) error { return nil }

// NonceTPM implements tpm2.Session.
func (s *pinSession) NonceTPM() tpm2.TPM2BNonce { return s.nonceTPM }

// NewNonceCaller implements tpm2.Session.
func (s *pinSession) NewNonceCaller() error {
	_, err := rand.Read(s.nonceCaller.Buffer)
	return err
}

// Authorize implements tpm2.Session: HMAC(authValue, cpHash || nonceCaller
// || nonceTPM || addNonces || attributes). The session is not continued:
// the TPM flushes it after the command.
func (s *pinSession) Authorize(cc tpm2.TPMCC, parms, addNonces []byte, names []tpm2.TPM2BName, _ int) (*tpm2.TPMSAuthCommand, error) {
	h := sha256.New()
	_ = binary.Write(h, binary.BigEndian, uint32(cc))
	for _, n := range names {
		h.Write(n.Buffer)
	}
	h.Write(parms)
	mac := s.hmac(h.Sum(nil), s.nonceCaller.Buffer, s.nonceTPM.Buffer, addNonces, 0)
	return &tpm2.TPMSAuthCommand{
		Handle:        s.handle,
		Nonce:         s.nonceCaller,
		Attributes:    tpm2.TPMASession{},
		Authorization: tpm2.TPM2BData{Buffer: mac},
	}, nil
}

// Validate implements tpm2.Session: it checks the TPM's response HMAC.
func (s *pinSession) Validate(rc tpm2.TPMRC, cc tpm2.TPMCC, parms []byte, _ []tpm2.TPM2BName, _ int, auth *tpm2.TPMSAuthResponse) error {
	s.nonceTPM = auth.Nonce
	if !auth.Attributes.ContinueSession {
		s.handle = tpm2.TPMRHNull
	}
	h := sha256.New()
	_ = binary.Write(h, binary.BigEndian, uint32(rc))
	_ = binary.Write(h, binary.BigEndian, uint32(cc))
	h.Write(parms)
	var attrs byte
	if auth.Attributes.ContinueSession {
		attrs |= 1
	}
	want := s.hmac(h.Sum(nil), s.nonceTPM.Buffer, s.nonceCaller.Buffer, nil, attrs)
	if !hmac.Equal(want, auth.Authorization.Buffer) {
		return fmt.Errorf("tpm2: the TPM's response HMAC does not verify")
	}
	return nil
}

func (s *pinSession) hmac(pHash, newer, older, addNonces []byte, attrs byte) []byte {
	m := hmac.New(sha256.New, s.auth)
	m.Write(pHash)
	m.Write(newer)
	m.Write(older)
	m.Write(addNonces)
	m.Write([]byte{attrs})
	return m.Sum(nil)
}

// IsEncryption implements tpm2.Session.
func (s *pinSession) IsEncryption() bool { return false }

// IsDecryption implements tpm2.Session.
func (s *pinSession) IsDecryption() bool { return false }

// Encrypt implements tpm2.Session (no parameter encryption here).
func (s *pinSession) Encrypt([]byte) error { return nil }

// Decrypt implements tpm2.Session (no parameter encryption here).
func (s *pinSession) Decrypt([]byte) error { return nil }

// Handle implements tpm2.Session.
func (s *pinSession) Handle() tpm2.TPMHandle { return s.handle }
