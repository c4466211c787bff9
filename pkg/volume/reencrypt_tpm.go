package volume

import (
	"fmt"

	"github.com/atrest/atrest/pkg/secret"
)

// reencryptTPM seals a new secret for each of the volume's TPM keyslots
// (atrest tpm enroll's or systemd-cryptenroll's), to the same PCRs and
// bank, for the new volume key: the old keyslots and their tokens go when
// the re-encryption ends, and without this the volume would silently lose
// its TPM unlock. A PIN keyslot is refused (the run would need the PIN;
// no PIN is asked for here): remove it and enrol it again afterwards. An
// unreadable systemd-tpm2 token is refused too. Nothing is written; the
// caller wipes the slots.
func (c *change) reencryptTPM() ([]*tpmSlot, error) {
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
		if tok.PIN {
			return fail(fmt.Errorf("%w: TPM keyslot %d of %s needs a PIN, which reencrypt does not ask for: remove it (atrest tpm remove %s --keyslot %d), re-encrypt, then enrol it again (atrest tpm enroll --pin); nothing was changed", ErrInvalidArgument, tok.Keyslot, c.v.Ref(), c.v.Ref(), tok.Keyslot))
		}
		t, _, err := c.m.sealTPM(TPMOptions{PCRs: tok.PCRs, Bank: tok.Bank})
		if err != nil {
			return fail(fmt.Errorf("re-seal TPM keyslot %d: %w", tok.Keyslot, err))
		}
		out = append(out, t)
		// The TPM must give the secret back before it is enrolled.
		pass, err := unsealPassphrase(t.device, &t.tok, nil)
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

// verifyTPM proves, once the re-encryption has ended, each TPM keyslot
// as the next boot will (its stored token unsealed by the TPM, its keyslot
// opened to the volume key the platform keyslot gives); the keyslots are
// not usable before, since a header in re-encryption opens no keyslot. The
// data is re-encrypted by then, so one that fails is a warning naming the
// way to enrol it again.
func (c *change) verifyTPM(ps *secret.Key) {
	ids, toks, _ := tpmTokens(c.v.Header)
	if len(ids) == 0 {
		return
	}
	vk, err := c.v.Header.OpenKeyslot(c.dev, c.v.Platform.Keyslot, ps)
	if err != nil {
		c.warnings = append(c.warnings, fmt.Sprintf("the TPM keyslots were not verified: the platform keyslot: %v", err))
		return
	}
	defer vk.Wipe()
	for i, id := range ids {
		if toks[i] == nil || toks[i].PIN {
			continue
		}
		probe := tpmSlot{id: id, device: c.m.cfg.TPM.Device}
		if err := probe.verify(c.v.Header, c.dev, vk); err != nil {
			c.warnings = append(c.warnings, fmt.Sprintf("TPM keyslot %d does not open %s after the re-encryption (%v): enrol it again (atrest tpm remove %s --keyslot %d; atrest tpm enroll %s)", toks[i].Keyslot, c.v.Ref(), err, c.v.Ref(), toks[i].Keyslot, c.v.Ref()))
		}
	}
}
