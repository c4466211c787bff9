package volume

import (
	"fmt"

	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/tpm2"
)

// reencryptTPM seals a new secret for each of the volume's TPM keyslots
// (atrest tpm enroll's or systemd-cryptenroll's), to the same PCRs and
// bank, for the new volume key: the old keyslots and their tokens go when
// the re-encryption ends, and without this the volume would silently lose
// its TPM unlock. A PIN keyslot is re-sealed with pin, the same PIN: it is
// proven first by one unseal of the old keyslot, which must open it to the
// volume key vk (a wrong PIN is refused here, costing one try of the
// TPM's dictionary-attack counter). Without pin a PIN keyslot is refused,
// and so is an unreadable systemd-tpm2 token. Nothing is written; the
// caller wipes the slots.
func (c *change) reencryptTPM(vk, pin *secret.Key) ([]*tpmSlot, error) {
	ids, toks, errs := tpmTokens(c.v.Header)
	var out []*tpmSlot
	fail := func(err error) ([]*tpmSlot, error) {
		for _, t := range out {
			t.wipe()
		}
		return nil, err
	}
	for i, id := range ids {
		if errs[i] != nil {
			return fail(fmt.Errorf("%w: systemd-tpm2 token %d of %s cannot be read (%v), so its keyslot cannot be re-sealed for the new volume key: remove it first (systemd-cryptenroll --wipe-slot); nothing was changed", ErrInvalidArgument, id, c.v.Ref(), errs[i]))
		}
		tok := toks[i]
		opts := TPMOptions{PCRs: tok.PCRs, Bank: tok.Bank}
		if tok.PIN {
			if pin == nil {
				return fail(fmt.Errorf("%w: TPM keyslot %d of %s needs a PIN to be re-sealed for the new volume key: give it with --pin-file FILE (or --pin), or remove the keyslot (atrest tpm remove %s --keyslot %d), re-encrypt, then enrol it again (atrest tpm enroll --pin); nothing was changed", ErrInvalidArgument, tok.Keyslot, c.v.Ref(), c.v.Ref(), tok.Keyslot))
			}
			if err := c.provePIN(tok, vk, pin); err != nil {
				return fail(err)
			}
			opts.PIN = pin
		}
		t, _, err := c.m.sealTPM(opts)
		if err != nil {
			return fail(fmt.Errorf("re-seal TPM keyslot %d: %w", tok.Keyslot, err))
		}
		out = append(out, t)
		// The TPM must give the secret back before it is enrolled.
		pass, err := unsealPassphrase(t.device, &t.tok, t.pin)
		if err != nil {
			return fail(fmt.Errorf("%w: re-sealed TPM keyslot %d does not unseal: %w", ErrVerify, tok.Keyslot, err))
		}
		ok := pass.Equal(t.pass)
		pass.Wipe()
		if !ok {
			return fail(fmt.Errorf("%w: re-sealed TPM keyslot %d unseals to another secret", ErrVerify, tok.Keyslot))
		}
	}
	return out, nil
}

// provePIN unseals the PIN keyslot tok with pin and opens it to vk: the
// PIN given is the keyslot's, before anything is sealed or written.
func (c *change) provePIN(tok *tpm2.Token, vk, pin *secret.Key) error {
	pass, err := unsealPassphrase(c.m.cfg.TPM.Device, tok, pin)
	if err != nil {
		return fmt.Errorf("TPM keyslot %d of %s with the PIN given: %w; nothing was changed", tok.Keyslot, c.v.Ref(), err)
	}
	defer pass.Wipe()
	got, err := c.v.Header.OpenKeyslot(c.dev, tok.Keyslot, pass)
	if err != nil {
		return fmt.Errorf("TPM keyslot %d of %s with the PIN given: %w; nothing was changed", tok.Keyslot, c.v.Ref(), err)
	}
	same := got.Equal(vk)
	got.Wipe()
	if !same {
		return fmt.Errorf("TPM keyslot %d of %s: %w; nothing was changed", tok.Keyslot, c.v.Ref(), luks2.ErrWrongVolumeKey)
	}
	return nil
}

// verifyTPM proves, once the re-encryption has ended, each TPM keyslot
// as the next boot will (its stored token unsealed by the TPM, its keyslot
// opened to the volume key a platform keyslot gives with one of passes; a
// PIN keyslot with pin, skipped without it). The start proved them
// already (proveStart); this is the header the boot reads. The data is
// re-encrypted by then, so one that fails is a warning naming the way to
// enrol it again.
func (c *change) verifyTPM(passes []*secret.Key, pin *secret.Key) {
	ids, toks, _ := tpmTokens(c.v.Header)
	if len(ids) == 0 {
		return
	}
	vk := c.finalKey(passes)
	if vk == nil {
		c.warnings = append(c.warnings, "the TPM keyslots were not verified: no platform keyslot opened")
		return
	}
	defer vk.Wipe()
	for i, id := range ids {
		if toks[i] == nil || toks[i].PIN && pin == nil {
			continue
		}
		probe := tpmSlot{id: id, device: c.m.cfg.TPM.Device}
		if toks[i].PIN {
			probe.pin = pin
		}
		if err := probe.verify(c.v.Header, c.dev, vk); err != nil {
			c.warnings = append(c.warnings, fmt.Sprintf("TPM keyslot %d does not open %s after the re-encryption (%v): enrol it again (atrest tpm remove %s --keyslot %d; atrest tpm enroll %s)", toks[i].Keyslot, c.v.Ref(), err, c.v.Ref(), toks[i].Keyslot, c.v.Ref()))
		}
	}
}
