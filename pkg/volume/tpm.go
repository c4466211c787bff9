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
	return m.tpmChange(ctx, v, "tpm-enroll", m.platformKeyOf, func(c *change, vk *secret.Key, res *TPMResult) error {
		return c.enrollTPM(ctx, vk, opts, res)
	})
}

// tpmChange runs change on v with the volume key key gives (the platform
// keyslot's, or the recovery key's) and a current header backup, then
// refreshes the backup.
func (m *Manager) tpmChange(ctx context.Context, v *Volume, op string, key func(context.Context, *change) (*secret.Key, error), change func(*change, *secret.Key, *TPMResult) error) (*TPMResult, error) {
	c, release, err := m.begin(ctx, v, op)
	if err != nil {
		return nil, err
	}
	defer release()
	if _, err := c.finishInterrupted(ctx); err != nil {
		return nil, err
	}
	vk, err := key(ctx, c)
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
	res.Warnings = append(res.Warnings, c.warnings...)
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

// platformKeyOf is the volume key through c's platform keyslot: the KMS
// vouches for the node.
func (m *Manager) platformKeyOf(ctx context.Context, c *change) (*secret.Key, error) {
	return m.platformKey(ctx, c.v, c.dev)
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
