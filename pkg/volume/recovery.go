package volume

import (
	"context"
	"fmt"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/recoverykey"
	"github.com/atrest/atrest/pkg/secret"
)

// passphrase turns what an operator typed into the keyslot passphrase: a
// recovery key in canonical form when it looks like one (so dashes and case
// do not matter), else the bytes as given (a cryptsetup passphrase). The
// caller wipes the result.
func passphrase(in *secret.Key) (*secret.Key, error) {
	if recoverykey.Looks(in.Bytes()) {
		return recoverykey.Normalize(in)
	}
	return in.Clone()
}

// RecoveryUnlock opens v with a recovery key (or any passphrase of one of
// its keyslots) when the KMS cannot: no KMS is contacted. The key stays
// the caller's to wipe.
func (m *Manager) RecoveryUnlock(ctx context.Context, v *Volume, key *secret.Key, readOnly bool) (res OpenResult, err error) {
	defer func() { m.audit(ctx, "recovery-unlock", v.UUID(), v.Name, v.Device, err) }()
	res = OpenResult{Name: v.Name, UUID: v.UUID(), Device: v.Device}
	if err := dmcrypt.Available(); err != nil {
		return res, err
	}
	if open, err := m.isOpen(v); err != nil {
		return res, err
	} else if open {
		res.AlreadyOpen = true
		return res, nil
	}
	d, err := v.open(false)
	if err != nil {
		return res, err
	}
	defer d.Close()
	vk, err := m.openWith(v, d, key)
	if err != nil {
		return res, err
	}
	defer vk.Wipe()
	if err := m.mapVolume(v, d, vk, readOnly); err != nil {
		return res, err
	}
	// The operator's recovery key vouches for the node: TPM keyslots
	// whose PCRs changed are sealed again as tpm.reseal allows (a failure
	// is logged and audited; the volume is open either way).
	res.By = []string{FactorRecovery}
	_, _ = m.autoReseal(ctx, v, res.By, func(context.Context, *change) (*secret.Key, error) { return vk.Clone() })
	return res, nil
}

// openWith opens v's volume key on f with a typed key, trying every
// keyslot.
func (m *Manager) openWith(v *Volume, f luks2.Reader, key *secret.Key) (*secret.Key, error) {
	pass, err := passphrase(key)
	if err != nil {
		return nil, err
	}
	defer pass.Wipe()
	vk, _, err := v.Header.Open(f, pass)
	return vk, err
}

// RecoveryRotate replaces the recovery key: a new one under mode (the
// configured policy when empty), escrowed or to be printed, enrolled and
// verified, then the old recovery keyslots removed. In mode print, show
// (required there) outputs the new key first: the old recovery keyslots
// go only when it returned nil; when it fails, the new keyslot goes
// instead. The platform keyslot opens the volume key, so the KMS must be
// reachable. A journal lets the next change of the volume settle a
// rotation that was cut short (settleRecovery).
func (m *Manager) RecoveryRotate(ctx context.Context, v *Volume, mode string, show func(*Recovery) error) (rec *Recovery, warnings []string, err error) {
	defer func() { m.audit(ctx, "recovery-rotate", v.UUID(), v.Name, v.Device, err) }()
	mode = m.recoveryMode(mode)
	switch {
	case mode == config.RecoveryNone:
		return nil, nil, fmt.Errorf("%w: recovery rotate needs mode escrow or print (to remove the recovery key, use rekey --recovery --recovery-mode none)", ErrInvalidArgument)
	case mode == config.RecoveryPrint && show == nil:
		return nil, nil, fmt.Errorf("%w: recovery mode print needs a way to show the key", ErrInvalidArgument)
	}
	c, release, err := m.begin(ctx, v, "recovery-rotate")
	if err != nil {
		return nil, nil, err
	}
	defer release()
	if _, err := c.finishInterrupted(ctx); err != nil {
		return nil, nil, err
	}
	if !c.v.Managed() {
		return nil, nil, fmt.Errorf("%s: %w", v.Device, ErrNotManaged)
	}
	vk, err := m.platformKey(ctx, c.v, c.dev)
	if err != nil {
		return nil, nil, err
	}
	defer vk.Wipe()
	if err := m.ensureBackup(ctx, c.dev, c.v.Header); err != nil {
		return nil, nil, err
	}
	if rec, err = m.newRecovery(ctx, c.v.UUID(), mode); err != nil {
		return nil, nil, err
	}
	if err := c.rotateRecovery(ctx, vk, rec, func() error { return show(rec) }); err != nil {
		rec.Wipe()
		return nil, nil, err
	}
	rec.settle()
	c.refreshBackup(ctx)
	return rec, c.warnings, nil
}

// rotateRecovery enrolls rec next to the old recovery keyslots (recording
// it in the platform token), verifies it, and has finishRecovery remove
// the old ones.
func (c *change) rotateRecovery(ctx context.Context, vk *secret.Key, rec *Recovery, show func() error) error {
	v := c.v
	j := &journal{Op: c.op, Started: c.m.now().UTC(), OldKeyslot: v.Platform.Keyslot, OldToken: v.TokenID,
		NewKeyslot: v.Platform.Keyslot, NewToken: v.TokenID,
		Recovery: true, RecoveryMode: rec.Mode, OldRecovery: v.Recovery, OldRecord: v.Platform.Recovery}
	if err := c.m.writeJournal(v.UUID(), j); err != nil {
		return err
	}
	k := &newKeys{vk: vk, rec: rec, record: &j.OldRecord}
	record := func(u *luks2.Update) error {
		next := *v.Platform
		next.Recovery = rec.record()
		data, err := next.Marshal()
		if err == nil {
			_, err = u.SetToken(v.TokenID, data)
		}
		return err
	}
	if err := c.commitKeys(ctx, k, record, nil); err != nil {
		return err
	}
	j.Verified = true
	if err := c.m.writeJournal(v.UUID(), j); err != nil {
		return err
	}
	failpoint(c.op + "-after-verify")
	if err := c.finishRecovery(ctx, j, rec, show); err != nil {
		return err
	}
	return c.m.clearJournal(v.UUID())
}

// Reseal gives v a new platform keyslot under the KMS configured now,
// opening the volume with key (the recovery key, or another passphrase of
// the volume): for a KMS that lost its KEK, or a node that moved to another
// KMS. The old platform keyslots are removed once the new one is verified.
func (m *Manager) Reseal(ctx context.Context, v *Volume, key *secret.Key) (res *RekeyResult, err error) {
	defer func() { m.audit(ctx, "recovery-reseal", v.UUID(), v.Name, v.Device, err) }()
	c, release, err := m.begin(ctx, v, "reseal")
	if err != nil {
		return nil, err
	}
	defer release()
	res = &RekeyResult{Name: c.v.Name, UUID: c.v.UUID(), Device: c.v.Device, OldKeyslot: -1}
	if c.v.Name == "" {
		return nil, fmt.Errorf("%w: %s has no name; adopt it with a name instead", ErrInvalidArgument, v.Device)
	}
	vk, err := m.openWith(c.v, c.dev, key)
	if err != nil {
		return nil, err
	}
	defer vk.Wipe()
	if c.v.Managed() {
		res.OldKeyslot = c.v.Platform.Keyslot
	}
	slot, tok, err := c.replacePlatform(ctx, vk, nil, nil)
	if err != nil {
		return nil, err
	}
	res.NewKeyslot, res.KMS, res.Key, res.KeyVersion = slot, tok.KMS, tok.Key, tok.KeyVersion
	res.Warnings = c.warnings
	return res, nil
}
