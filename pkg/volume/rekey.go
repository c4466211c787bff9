package volume

import (
	"context"
	"fmt"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/token"
)

// RekeyOptions tune Rekey.
type RekeyOptions struct {
	// Recovery also replaces the recovery key, under RecoveryMode (the
	// configured policy when empty).
	Recovery     bool
	RecoveryMode string
	// Show outputs a new recovery key in mode print (required there). It
	// is called with the result, the new key in Recovery.Key, once the
	// new keyslots work and the old platform keyslot is gone, and before
	// the old recovery keyslots are removed: they go only when Show
	// returned nil, so a key that was never output is never the only one.
	// When Show fails the new recovery keyslot is removed again.
	Show func(*RekeyResult) error
}

// RekeyResult is one rekeyed volume.
type RekeyResult struct {
	Name, UUID, Device string
	// OldKeyslot and NewKeyslot are the platform keyslots before and after.
	OldKeyslot, NewKeyslot int
	KMS, Key               string
	KeyVersion             int
	// Recovery is the new recovery key (with Recovery set); in mode print
	// it holds the key to show once, then Wipe.
	Recovery *Recovery
	// Resumed says what happened to an earlier, interrupted change that
	// this run found: "completed", "rolled back", or "".
	Resumed string
	// Warnings: what failed after the change was complete (e.g. the
	// header backup); the rekey itself succeeded.
	Warnings []string
}

// Rekey gives the volume a fresh platform secret: a new keyslot and token,
// verified through the KMS, then the old keyslot and token removed. The
// volume key does not change, so an open mapping is not disturbed. An
// interrupted earlier rekey is finished (or undone) first; if it completed,
// that is this rekey.
func (m *Manager) Rekey(ctx context.Context, v *Volume, o RekeyOptions) (res *RekeyResult, err error) {
	return m.rekey(ctx, v, o, nil)
}

// rekey is Rekey with the KMS's answers a, given ahead (RekeyEach), taken
// first.
func (m *Manager) rekey(ctx context.Context, v *Volume, o RekeyOptions, a *answers) (res *RekeyResult, err error) {
	defer func() { m.audit(ctx, "rekey", v.UUID(), v.Name, v.Device, err) }()
	if o.Recovery && m.recoveryMode(o.RecoveryMode) == config.RecoveryPrint && o.Show == nil {
		return nil, fmt.Errorf("%w: recovery mode print needs a way to show the key (RekeyOptions.Show)", ErrInvalidArgument)
	}
	c, release, err := m.begin(ctx, v, "rekey")
	if err != nil {
		return nil, err
	}
	defer release()
	c.known = a
	res = &RekeyResult{Name: c.v.Name, UUID: c.v.UUID(), Device: c.v.Device, OldKeyslot: -1}
	if res.Resumed, err = c.finishInterrupted(ctx); err != nil {
		return nil, err
	}
	if res.Resumed == "completed" && !o.Recovery {
		t := c.v.Platform
		res.NewKeyslot, res.KMS, res.Key, res.KeyVersion = t.Keyslot, t.KMS, t.Key, t.KeyVersion
		res.Warnings = c.warnings
		return res, nil
	}
	if !c.v.Managed() {
		return nil, fmt.Errorf("rekey: %w", c.v.errNotManaged())
	}
	res.OldKeyslot = c.v.Platform.Keyslot
	vk, _, err := m.platformKeyFrom(ctx, a, c.v, c.dev)
	if err != nil {
		return nil, err
	}
	defer vk.Wipe()
	if o.Recovery {
		if res.Recovery, err = m.newRecovery(ctx, c.v.UUID(), m.recoveryMode(o.RecoveryMode)); err != nil {
			return nil, err
		}
	}
	show := func(slot int, tok *token.Token) error {
		res.NewKeyslot, res.KMS, res.Key, res.KeyVersion = slot, tok.KMS, tok.Key, tok.KeyVersion
		return o.Show(res)
	}
	slot, tok, err := c.replacePlatform(ctx, vk, res.Recovery, show)
	if err != nil {
		res.Recovery.Wipe()
		return nil, err
	}
	res.Recovery.settle()
	res.NewKeyslot, res.KMS, res.Key, res.KeyVersion = slot, tok.KMS, tok.Key, tok.KeyVersion
	res.Warnings = c.warnings
	return res, nil
}

// begin takes v's lock, opens its device for writing and reads its header
// afresh: the start of every use case that changes a header.
func (m *Manager) begin(ctx context.Context, v *Volume, op string) (*change, func(), error) {
	release, err := m.lock(ctx, v.UUID())
	if err != nil {
		return nil, nil, err
	}
	dev, err := openDevice(v)
	if err != nil {
		release()
		return nil, nil, err
	}
	c := &change{m: m, v: v, dev: dev, op: op}
	if err := c.reload(ctx); err != nil {
		dev.Close()
		release()
		return nil, nil, err
	}
	return c, func() { dev.Close(); release() }, nil
}

// recoveryMode returns mode, or the configured policy when empty.
func (m *Manager) recoveryMode(mode string) string {
	if mode == "" {
		return m.cfg.Recovery.Mode
	}
	return mode
}
