package tpm2

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/atrest/atrest/pkg/secret"
)

// TokenType is the LUKS2 token type of systemd's TPM2 keyslots.
const TokenType = "systemd-tpm2"

// Token is a systemd-tpm2 LUKS2 token as systemd 252 writes it
// (tpm2_make_luks2_json): the keyslot it opens and the sealed secret.
type Token struct {
	Keyslot int
	Sealed
}

// tokenJSON has systemd 252's fields in systemd's order.
type tokenJSON struct {
	Type       string   `json:"type"`
	Keyslots   []string `json:"keyslots"`
	Blob       []byte   `json:"tpm2-blob"`
	PCRs       []int    `json:"tpm2-pcrs"`
	Bank       string   `json:"tpm2-pcr-bank"`
	PrimaryAlg string   `json:"tpm2-primary-alg"`
	PolicyHash string   `json:"tpm2-policy-hash"`
	PIN        bool     `json:"tpm2-pin"`
}

// JSON returns the token as systemd 252 writes it.
func (t *Token) JSON() ([]byte, error) {
	pcrs, err := checkPCRs(t.PCRs)
	if err != nil {
		return nil, err
	}
	if _, err := t.Bank.alg(); err != nil {
		return nil, err
	}
	if _, err := primaryTemplate(t.PrimaryAlg); err != nil {
		return nil, err
	}
	if pcrs == nil {
		pcrs = []int{}
	}
	return json.Marshal(tokenJSON{
		Type: TokenType, Keyslots: []string{strconv.Itoa(t.Keyslot)},
		Blob: t.Blob, PCRs: pcrs, Bank: string(t.Bank), PrimaryAlg: string(t.PrimaryAlg),
		PolicyHash: hex.EncodeToString(t.PolicyHash), PIN: t.PIN,
	})
}

// ParseToken reads a systemd-tpm2 token. Fields systemd 252 made optional
// take its defaults: tpm2-pcr-bank sha256 (systemd picks the best bank;
// tokens before 250 always used sha256), tpm2-primary-alg ecc, tpm2-pin
// false. Tokens of later systemd versions that need what this package does
// not implement (a signed PCR policy, pcrlock, a salted PIN, a persistent
// SRK) are refused with ErrUnsupported rather than misread. Everything else
// malformed wraps ErrBadToken.
func ParseToken(data []byte) (*Token, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadToken, err)
	}
	var typ string
	if err := field(raw, "type", &typ, true); err != nil {
		return nil, err
	}
	if typ != TokenType {
		return nil, fmt.Errorf("%w: type %q, not %q", ErrBadToken, typ, TokenType)
	}
	for _, name := range []string{"tpm2_pubkey", "tpm2_pubkey_pcrs", "tpm2_pcrlock", "tpm2_salt", "tpm2_srk"} {
		if v, ok := raw[name]; ok && !emptyJSON(v) {
			return nil, fmt.Errorf("%w: the token uses %s (a newer systemd's feature)", ErrUnsupported, name)
		}
	}
	var slots []string
	if err := field(raw, "keyslots", &slots, true); err != nil {
		return nil, err
	}
	if len(slots) != 1 {
		return nil, fmt.Errorf("%w: %d keyslots (systemd binds one)", ErrBadToken, len(slots))
	}
	slot, err := strconv.Atoi(slots[0])
	if err != nil || slot < 0 || strconv.Itoa(slot) != slots[0] {
		return nil, fmt.Errorf("%w: keyslot %q", ErrBadToken, slots[0])
	}
	tok := &Token{Keyslot: slot, Sealed: Sealed{Bank: SHA256, PrimaryAlg: ECC}}
	if err := field(raw, "tpm2-blob", &tok.Blob, true); err != nil {
		return nil, err
	}
	if err := field(raw, "tpm2-pcrs", &tok.PCRs, true); err != nil {
		return nil, err
	}
	if tok.PCRs, err = checkPCRs(tok.PCRs); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadToken, err)
	}
	var bank, alg, policy string
	if err := field(raw, "tpm2-pcr-bank", &bank, false); err != nil {
		return nil, err
	}
	if bank != "" {
		tok.Bank = Bank(bank)
	}
	if _, err := tok.Bank.alg(); err != nil {
		return nil, err
	}
	if err := field(raw, "tpm2-primary-alg", &alg, false); err != nil {
		return nil, err
	}
	if alg != "" {
		tok.PrimaryAlg = PrimaryAlg(alg)
	}
	if _, err := primaryTemplate(tok.PrimaryAlg); err != nil {
		return nil, err
	}
	if err := field(raw, "tpm2-policy-hash", &policy, true); err != nil {
		return nil, err
	}
	if tok.PolicyHash, err = hex.DecodeString(policy); err != nil || len(tok.PolicyHash) != 32 {
		return nil, fmt.Errorf("%w: tpm2-policy-hash is not 32 bytes of hex", ErrBadToken)
	}
	if err := field(raw, "tpm2-pin", &tok.PIN, false); err != nil {
		return nil, err
	}
	if _, _, _, err := splitBlob(tok.Blob); err != nil {
		return nil, err
	}
	return tok, nil
}

func field(raw map[string]json.RawMessage, name string, into any, required bool) error {
	v, ok := raw[name]
	if !ok {
		if required {
			return fmt.Errorf("%w: no %q", ErrBadToken, name)
		}
		return nil
	}
	if err := json.Unmarshal(v, into); err != nil {
		return fmt.Errorf("%w: %q: %w", ErrBadToken, name, err)
	}
	return nil
}

func emptyJSON(v json.RawMessage) bool {
	v = bytes.TrimSpace(v)
	return bytes.Equal(v, []byte("null")) || bytes.Equal(v, []byte("[]")) || bytes.Equal(v, []byte(`""`))
}

// Passphrase returns the keyslot passphrase systemd derives from an
// unsealed secret: its base64 encoding (standard alphabet, padded), made in
// locked memory. The caller wipes it.
func Passphrase(sec *secret.Key) (*secret.Key, error) {
	out, err := secret.New(base64.StdEncoding.EncodedLen(sec.Len()))
	if err != nil {
		return nil, err
	}
	base64.StdEncoding.Encode(out.Bytes(), sec.Bytes())
	return out, nil
}
