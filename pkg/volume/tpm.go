package volume

import (
	"context"
	"fmt"
	"slices"

	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/tpm2"
)

// TPMEnroll adds a TPM keyslot to v: a secret sealed by the configured
// TPM under opts (systemd 252's scheme), whose base64 is the keyslot's
// passphrase, and a systemd-tpm2 token, so systemd-cryptsetup
// (tpm2-device=auto) and cryptsetup's token plugin open the volume too.
// The volume key comes through the platform keyslot (the KMS), and the new
// keyslot goes in through the one enrol sequence: added in one commit,
// verified by unsealing the stored token and opening the keyslot, removed
// again if that fails.
func (m *Manager) TPMEnroll(ctx context.Context, v *Volume, opts TPMOptions) (res *TPMResult, err error) {
	defer func() { m.audit(ctx, "tpm-enroll", v.UUID(), v.Name, v.Device, err) }()
	return m.tpmChange(ctx, v, "tpm-enroll", func(c *change, vk *secret.Key, res *TPMResult) error {
		return c.enrollTPM(ctx, vk, opts, res)
	})
}

// tpmChange runs change on v with the volume key from the platform
// keyslot and a current header backup, then refreshes the backup.
func (m *Manager) tpmChange(ctx context.Context, v *Volume, op string, change func(*change, *secret.Key, *TPMResult) error) (*TPMResult, error) {
	c, release, err := m.begin(ctx, v, op)
	if err != nil {
		return nil, err
	}
	defer release()
	if _, err := c.finishInterrupted(ctx); err != nil {
		return nil, err
	}
	vk, err := m.platformKey(ctx, c.v, c.dev)
	if err != nil {
		return nil, err
	}
	defer vk.Wipe()
	if err := m.ensureBackup(ctx, c.dev, c.v.Header); err != nil {
		return nil, err
	}
	res := &TPMResult{Name: c.v.Name, UUID: c.v.UUID()}
	if err := change(c, vk, res); err != nil {
		return nil, err
	}
	c.refreshBackup(ctx)
	res.Warnings = c.warnings
	return res, nil
}

func (c *change) enrollTPM(ctx context.Context, vk *secret.Key, opts TPMOptions, res *TPMResult) error {
	t, unenforced, err := c.m.sealTPM(opts)
	if err != nil {
		return err
	}
	defer t.wipe()
	if err := c.commitKeys(ctx, &newKeys{vk: vk, tpm: t}, nil, nil); err != nil {
		return err
	}
	res.Unenforced = res.Unenforced || unenforced
	for _, s := range c.m.tpmStatus(c.v.Header) {
		if s.Token == t.id {
			s.PCRsMatch, s.Error = nil, ""
			res.Added = append(res.Added, s)
		}
	}
	return nil
}

// TPMRemove removes v's TPM keyslots and their systemd-tpm2 tokens: the
// one given, or all when keyslot is -1. The platform keyslot stays, so
// the volume keeps opening through the KMS.
func (m *Manager) TPMRemove(ctx context.Context, v *Volume, keyslot int) (res *TPMResult, err error) {
	defer func() { m.audit(ctx, "tpm-remove", v.UUID(), v.Name, v.Device, err) }()
	c, release, err := m.begin(ctx, v, "tpm-remove")
	if err != nil {
		return nil, err
	}
	defer release()
	res = &TPMResult{Name: c.v.Name, UUID: c.v.UUID()}
	slots := tpmKeyslots(c.v)
	if keyslot >= 0 {
		if !slices.Contains(slots, keyslot) {
			return nil, fmt.Errorf("%w: keyslot %d of %s is not a TPM keyslot (TPM keyslots: %v)", ErrNotFound, keyslot, v.Ref(), slots)
		}
		slots = []int{keyslot}
	}
	if len(slots) == 0 {
		return nil, fmt.Errorf("%w: %s has no TPM keyslot", ErrNotFound, v.Ref())
	}
	if err := m.ensureBackup(ctx, c.dev, c.v.Header); err != nil {
		return nil, err
	}
	if err := c.remove(ctx, slots, nil); err != nil {
		return nil, err
	}
	c.refreshBackup(ctx)
	res.Removed, res.Warnings = slots, c.warnings
	return res, nil
}

// TPMReseal seals v's TPM keyslots again to today's PCR values, each with
// its own PCRs, bank and PIN: a new keyslot is enrolled and verified, then
// the old one removed. Keyslots whose PCRs still match are left alone
// unless force. The volume key comes through the platform keyslot (the
// KMS), which vouches for the node; the TPM is never its own witness.
func (m *Manager) TPMReseal(ctx context.Context, v *Volume, pin *secret.Key, force bool) (res *TPMResult, err error) {
	defer func() { m.audit(ctx, "tpm-reseal", v.UUID(), v.Name, v.Device, err) }()
	return m.tpmChange(ctx, v, "tpm-reseal", func(c *change, vk *secret.Key, res *TPMResult) error {
		// Decide everything before the first change: a missing PIN is
		// refused with nothing resealed.
		var stale []TPMKeyslot
		for _, s := range m.tpmStatus(c.v.Header) {
			switch {
			case s.Bank == "": // unparsable token
				return fmt.Errorf("TPM keyslot %d: %s", s.Keyslot, s.Error)
			case !force && s.PCRsMatch != nil && *s.PCRsMatch:
				continue
			case s.PIN && pin == nil:
				return fmt.Errorf("%w: TPM keyslot %d needs its PIN (--pin, or --pin-file)", ErrInvalidArgument, s.Keyslot)
			}
			stale = append(stale, s)
		}
		for _, s := range stale {
			opts := TPMOptions{PCRs: s.PCRs, Bank: tpm2.Bank(s.Bank)}
			if s.PIN {
				opts.PIN = pin
			}
			if err := c.enrollTPM(ctx, vk, opts, res); err != nil {
				return err
			}
			if err := c.remove(ctx, []int{s.Keyslot}, nil); err != nil {
				return fmt.Errorf("the new TPM keyslot is verified, removing the old keyslot %d failed: %w", s.Keyslot, err)
			}
			res.Removed = append(res.Removed, s.Keyslot)
		}
		return nil
	})
}

// tpmKeyslots lists the keyslots of v's systemd-tpm2 tokens.
func tpmKeyslots(v *Volume) []int {
	var out []int
	for _, id := range v.Header.TokenIDs() {
		if t := v.Header.Tokens[id]; t.Type == tpm2.TokenType {
			out = append(out, t.Keyslots...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
