package volume

import (
	"context"
	"fmt"
	"os"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/backends"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/token"
)

// EraseResult is a crypto-erased volume.
type EraseResult struct {
	Name, UUID, Device string
	// Closed: the mapping was open and was closed first.
	Closed bool
	// Warnings: things that could not be cleaned up elsewhere (an escrowed
	// recovery key the node may not delete, a vault-kv secret).
	Warnings []string
	// KeyDestroyed names the KMS key destroyed with the volume (KMIP with
	// kmip.destroy_on_erase, for the node's last volume under it), and
	// KeyObjects how many key objects went.
	KeyDestroyed string
	KeyObjects   int
}

// Erase crypto-erases v for a disk that leaves the fleet: its mapping is
// closed (refused while mounted), every keyslot and token is destroyed in
// both header copies and the keyslots area overwritten, and the header
// backups in the state directory (which hold keyslots) are deleted. After
// it no key, recovery key or backup opens the data. confirm must repeat
// the volume's name.
func (m *Manager) Erase(ctx context.Context, v *Volume, confirm string) (res *EraseResult, err error) {
	defer func() { m.audit(ctx, "erase", v.UUID(), v.Name, v.Device, err) }()
	want := v.Name
	if want == "" {
		want = v.UUID()
	}
	if confirm != want {
		return nil, fmt.Errorf("%w: erase destroys %s for good; confirm with the volume's name %q", ErrNotConfirmed, v.Device, want)
	}
	res = &EraseResult{Name: v.Name, UUID: v.UUID(), Device: v.Device}
	if v.Name != "" {
		if open, err := m.isOpen(v); err != nil {
			return nil, err
		} else if open {
			if _, err := m.Close(ctx, v.Name); err != nil {
				return nil, fmt.Errorf("close /dev/mapper/%s before erasing: %w", v.Name, err)
			}
			res.Closed = true
		}
	}
	c, release, err := m.begin(ctx, v, "erase")
	if err != nil {
		return nil, err
	}
	defer release()
	if _, err := luks2.Erase(ctx, c.dev); err != nil {
		return nil, &StageError{Op: "erase", Device: v.Device, Err: err,
			State: "the erase may be partial; run erase again (the header backup was kept)"}
	}
	if err := m.removeBackups(v.UUID()); err != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("header backups not deleted (they can still open the data!): %v", err))
	}
	_ = m.clearJournal(v.UUID())
	for _, t := range append(othersOf(c.v), c.v.Platform) {
		if t == nil || t.KMS != config.BackendVaultKV {
			continue
		}
		store, err := m.kms.Store()
		if err == nil {
			err = store.Destroy(ctx, t.Key)
		}
		if err != nil {
			res.Warnings = append(res.Warnings, fmt.Sprintf("vault-kv secret %s not destroyed: %v", t.Key, err))
		}
	}
	if t := c.v.Platform; t != nil && t.KMS == config.BackendKMIP && m.cfg.KMIP.DestroyOnErase {
		m.destroyKeyWith(ctx, res, t)
	}
	if c.v.Platform != nil && c.v.Platform.Recovery != "" && c.v.Platform.Recovery != config.RecoveryPrint {
		res.Warnings = append(res.Warnings, "the escrowed recovery key ("+c.v.Platform.Recovery+") opens nothing any more; an administrator may delete it")
	}
	return res, nil
}

// destroyKeyWith destroys the KMS key of t after its volume was erased,
// when it is the node's configured per-node key and no other volume on
// the node uses it any more: the decommission of a node's last disk. The
// data is already beyond reach, so a failure here is a warning.
func (m *Manager) destroyKeyWith(ctx context.Context, res *EraseResult, t *token.Token) {
	if t.Key != backends.KMIPKeyName(m.cfg.KMIP.Key, os.Hostname) {
		res.Warnings = append(res.Warnings, fmt.Sprintf("kmip key %q kept: it is not this node's configured key (kmip.key)", t.Key))
		return
	}
	vols, _ := m.Scan(ctx)
	var users []string
	for _, v := range vols {
		if v.UUID() == res.UUID || !v.Managed() {
			continue
		}
		for _, o := range append(othersOf(v), v.Platform) {
			if o.KMS == t.KMS && o.Key == t.Key {
				users = append(users, v.Ref())
				break
			}
		}
	}
	if len(users) > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("kmip key %q kept: %d other volume(s) on this node still use it (%v); erasing the last one destroys it", t.Key, len(users), users))
		return
	}
	kek, err := m.kms.For(wrapped(t))
	if err == nil {
		d, ok := kek.(kms.Destroyer)
		if !ok {
			err = fmt.Errorf("backend %s cannot destroy keys", t.KMS)
		} else if res.KeyObjects, err = d.DestroyKey(ctx); err == nil {
			res.KeyDestroyed = t.Key
		}
	}
	if err != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("kmip key %q not destroyed (destroy it in the key manager): %v", t.Key, err))
	}
}
