package volume

import (
	"fmt"

	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/tpm2"
)

// RoleTPM is a keyslot opened by a systemd-tpm2 token (atrest tpm enroll,
// or systemd-cryptenroll --tpm2-device).
const RoleTPM = "tpm"

// TPMOptions choose a new TPM keyslot's binding.
type TPMOptions struct {
	// PCRs and Bank of the policy; an empty bank is the one systemd picks.
	PCRs []int
	Bank tpm2.Bank
	// PIN, when not nil, is needed as well (PolicyAuthValue). The caller
	// wipes it.
	PIN *secret.Key
}

// TPMResult is a TPM enroll, remove or reseal of one volume.
type TPMResult struct {
	Name, UUID string
	// Added are the new TPM keyslots, Removed the ones that went.
	Added   []TPMKeyslot
	Removed []int
	// Unenforced: every PCR of a new binding is unmeasured (all zeros or
	// ones), so the policy binds to the TPM alone.
	Unenforced bool
	// KEKRenewed: the node's TPM-sealed KEK no longer unsealed after a
	// PCR change and was sealed anew to today's PCRs; StaleKEK is where
	// the old one was kept.
	KEKRenewed bool
	StaleKEK   string
	// PolicyKeyslots are the new keyslots of a policy whose tpm factor
	// was re-sealed (its key material made again under the same policy).
	PolicyKeyslots []int
	// Resumed: an interrupted re-seal of the tpm factor was "completed"
	// or "rolled back" by this call.
	Resumed  string
	Warnings []string
}

// TPMKeyslot is a keyslot with a systemd-tpm2 token, as status shows it.
type TPMKeyslot struct {
	Keyslot    int    `json:"keyslot"`
	Token      int    `json:"token"`
	PCRs       []int  `json:"pcrs"`
	Bank       string `json:"bank"`
	PrimaryAlg string `json:"primary_alg"`
	PIN        bool   `json:"pin"`
	// PCRsMatch says whether today's PCR values still satisfy the binding
	// (nil when the TPM could not be asked; Error says why).
	PCRsMatch *bool  `json:"pcrs_match,omitempty"`
	Error     string `json:"error,omitempty"`
}

// tpmSlot is a TPM keyslot being added: the sealed secret's passphrase,
// its token, and the PIN the verification unseals with.
type tpmSlot struct {
	pass, pin *secret.Key
	tok       tpm2.Token
	slot, id  int
	device    string
}

func (t *tpmSlot) wipe() {
	t.pass.Wipe()
	t.pin.Wipe()
}

// add puts the keyslot (PBKDF2, as systemd-cryptenroll makes it for
// machine secrets) and its systemd-tpm2 token into u.
func (t *tpmSlot) add(u *luks2.Update, vk *secret.Key) error {
	var err error
	t.slot, err = u.AddKeyslot(vk, t.pass, luks2.KeyslotOptions{Slot: luks2.AnySlot, KDF: kdf.Platform(), Priority: luks2.PriorityNormal})
	if err != nil {
		return fmt.Errorf("add TPM keyslot: %w", err)
	}
	t.tok.Keyslot = t.slot
	data, err := t.tok.JSON()
	if err != nil {
		return err
	}
	if t.id, err = u.SetToken(luks2.AnyToken, data); err != nil {
		return fmt.Errorf("add systemd-tpm2 token: %w", err)
	}
	return nil
}

// verify proves the keyslot as the next boot will: the token as stored in
// h is unsealed by the TPM and opens its keyslot to vk (also in a header
// under re-encryption, whose start added it).
func (t *tpmSlot) verify(h *luks2.Header, dev luks2.Reader, vk *secret.Key) error {
	stored := h.Tokens[t.id]
	if stored == nil {
		return fmt.Errorf("systemd-tpm2 token %d is not in the header", t.id)
	}
	tok, err := tpm2.ParseToken(stored.JSON())
	if err != nil {
		return err
	}
	pass, err := unsealPassphrase(t.device, tok, t.pin)
	if err != nil {
		return err
	}
	defer pass.Wipe()
	got, err := openKeyslot(h, dev, tok.Keyslot, pass)
	if err != nil {
		return err
	}
	defer got.Wipe()
	if !got.Equal(vk) {
		return luks2.ErrWrongVolumeKey
	}
	return nil
}

// unsealPassphrase asks the TPM at device for tok's secret and returns the
// keyslot passphrase (base64 of it). The caller wipes it.
func unsealPassphrase(device string, tok *tpm2.Token, pin *secret.Key) (*secret.Key, error) {
	tp, err := tpm2.Open(device)
	if err != nil {
		return nil, err
	}
	defer tp.Close()
	sec, err := tp.Unseal(&tok.Sealed, pin)
	if err != nil {
		return nil, err
	}
	defer sec.Wipe()
	return tpm2.Passphrase(sec)
}

// sealTPM seals a new secret on the configured TPM for a keyslot.
func (m *Manager) sealTPM(opts TPMOptions) (*tpmSlot, bool, error) {
	tp, err := tpm2.Open(m.cfg.TPM.Device)
	if err != nil {
		return nil, false, err
	}
	defer tp.Close()
	sec, res, err := tp.Seal(tpm2.SealOptions{PCRs: opts.PCRs, Bank: opts.Bank, PIN: opts.PIN})
	if err != nil {
		return nil, false, err
	}
	defer sec.Wipe()
	t := &tpmSlot{tok: tpm2.Token{Sealed: res.Sealed}, device: m.cfg.TPM.Device}
	if t.pass, err = tpm2.Passphrase(sec); err != nil {
		return nil, false, err
	}
	if opts.PIN != nil {
		if t.pin, err = opts.PIN.Clone(); err != nil {
			t.wipe()
			return nil, false, err
		}
	}
	return t, res.Unenforced, nil
}

// tpmTokens lists v's systemd-tpm2 tokens, by token id; unparsable ones
// come back with their error.
func tpmTokens(h *luks2.Header) (ids []int, toks []*tpm2.Token, errs []error) {
	for _, id := range h.TokenIDs() {
		t := h.Tokens[id]
		if t.Type != tpm2.TokenType {
			continue
		}
		tok, err := tpm2.ParseToken(t.JSON())
		ids, toks, errs = append(ids, id), append(toks, tok), append(errs, err)
	}
	return ids, toks, errs
}

// tpmStatus describes v's TPM keyslots, asking the TPM (once for all of
// them) whether today's PCRs still satisfy each: nothing is unsealed.
func (m *Manager) tpmStatus(h *luks2.Header) []TPMKeyslot {
	ids, toks, errs := tpmTokens(h)
	out := []TPMKeyslot{}
	if len(ids) == 0 {
		return out
	}
	tp, openErr := tpm2.Open(m.cfg.TPM.Device)
	if openErr == nil {
		defer tp.Close()
	}
	for i, id := range ids {
		s := TPMKeyslot{Keyslot: -1, Token: id, PCRs: []int{}}
		if len(h.Tokens[id].Keyslots) > 0 {
			s.Keyslot = h.Tokens[id].Keyslots[0]
		}
		tok, err := toks[i], errs[i]
		if err == nil {
			s.Keyslot, s.Bank, s.PrimaryAlg, s.PIN = tok.Keyslot, string(tok.Bank), string(tok.PrimaryAlg), tok.PIN
			if tok.PCRs != nil {
				s.PCRs = tok.PCRs
			}
			err = openErr
		}
		if err == nil {
			var ok bool
			if ok, err = tp.PCRsMatch(&tok.Sealed); err == nil {
				s.PCRsMatch = &ok
			}
		}
		if err != nil {
			s.Error = err.Error()
		}
		out = append(out, s)
	}
	return out
}
