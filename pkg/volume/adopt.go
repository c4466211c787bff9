package volume

import (
	"context"
	"errors"
	"fmt"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/secret"
)

// AdoptOptions describe taking over a LUKS2 volume made by another tool.
type AdoptOptions struct {
	// Device holds the volume; Name is the mapping name to give it.
	Device, Name string
	// Passphrase opens one of its keyslots (a cryptsetup passphrase or key
	// file's content). Nil with Vaultlocker.
	Passphrase *secret.Key
	// Vaultlocker fetches the passphrase that vaultlocker stored in Vault
	// KV at <mount>/<hostname>/<uuid> (field dmcrypt_key).
	Vaultlocker      bool
	VaultlockerMount string
	// VaultlockerKV is that mount's KV version (vaultlocker's default is 1).
	VaultlockerKV int
	// RemoveOld kills the keyslot that opened the volume once the platform
	// keyslot is verified.
	RemoveOld bool
	// Recovery is the recovery policy for the adopted volume (configured
	// policy when empty).
	Recovery string
}

// AdoptResult is an adopted volume.
type AdoptResult struct {
	Name, UUID, Device string
	// OldKeyslot opened the volume; Removed says whether it is gone.
	OldKeyslot      int
	Removed         bool
	PlatformKeyslot int
	KMS, Key        string
	KeyVersion      int
	Recovery        *Recovery
	// Warnings: what failed after the volume was adopted (the header
	// backup); the adoption itself succeeded.
	Warnings []string
}

// ErrAlreadyManaged: adopt was asked to take over an atrest volume.
var ErrAlreadyManaged = errors.New("already an atrest volume")

// Adopt takes over an existing LUKS2 volume: it opens it with the given
// passphrase (or vaultlocker's key from Vault), adds a platform keyslot
// and token under the configured KMS and a recovery key by policy, and
// optionally removes the old keyslot. LUKS1 is refused (luks2.ErrLUKS1):
// `cryptsetup convert --type luks2` upgrades it first.
func (m *Manager) Adopt(ctx context.Context, o AdoptOptions) (res *AdoptResult, err error) {
	defer func() {
		uuid := ""
		if res != nil {
			uuid = res.UUID
		}
		m.audit(ctx, "adopt", uuid, o.Name, o.Device, err)
	}()
	if err := config.CheckName(o.Name); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	v, err := m.load(ctx, o.Device)
	if err != nil {
		return nil, err
	}
	if v.Managed() {
		return nil, fmt.Errorf("%w: %s is the atrest volume %q", ErrAlreadyManaged, v.Device, v.Name)
	}
	unlockName, err := m.lockName(ctx, o.Name)
	if err != nil {
		return nil, err
	}
	defer unlockName()
	if err := m.checkNameFree(ctx, o.Name, v.UUID(), v.Device); err != nil {
		return nil, err
	}
	pass := o.Passphrase
	if o.Vaultlocker {
		mount := o.VaultlockerMount
		if mount == "" {
			mount = "secret"
		}
		store, err := m.kms.Vaultlocker(mount, o.VaultlockerKV)
		if err != nil {
			return nil, err
		}
		if pass, err = store.Get(ctx, v.UUID()); err != nil {
			return nil, fmt.Errorf("vaultlocker key of %s: %w", v.UUID(), err)
		}
		defer pass.Wipe()
	}
	if pass == nil {
		return nil, fmt.Errorf("%w: adopt needs the volume's passphrase or --vaultlocker", ErrInvalidArgument)
	}
	v.Name = o.Name
	c, release, err := m.begin(ctx, v, "adopt")
	if err != nil {
		return nil, err
	}
	defer release()
	c.v.Name = o.Name
	vk, oldSlot, err := c.v.Header.Open(c.dev, pass)
	if err != nil {
		return nil, err
	}
	defer vk.Wipe()
	res = &AdoptResult{Name: o.Name, UUID: c.v.UUID(), Device: c.v.Device, OldKeyslot: oldSlot}

	if err := m.ensureBackup(ctx, c.dev, c.v.Header); err != nil {
		return nil, err
	}
	ps, tok, err := m.protect(ctx, c.v.UUID(), o.Name)
	if err != nil {
		return nil, err
	}
	defer ps.Wipe()
	if res.Recovery, err = m.newRecovery(ctx, c.v.UUID(), m.recoveryMode(o.Recovery)); err != nil {
		return nil, err
	}
	tok.Recovery = res.Recovery.record()
	k := &newKeys{vk: vk, ps: ps, tok: tok, rec: res.Recovery}
	if err := c.commitKeys(ctx, k, nil, nil); err != nil {
		res.Recovery.Wipe()
		return nil, err
	}
	res.PlatformKeyslot = k.slot
	res.Recovery.settle()
	res.KMS, res.Key, res.KeyVersion = tok.KMS, tok.Key, tok.KeyVersion
	if o.RemoveOld {
		if err := c.remove(ctx, []int{oldSlot}, nil); err != nil {
			return res, &StageError{Op: "adopt", Device: v.Device, Err: err,
				State: fmt.Sprintf("adopted; the old keyslot %d is still there", oldSlot)}
		}
		res.Removed = true
	}
	c.refreshBackup(ctx)
	res.Warnings = c.warnings
	return res, nil
}
