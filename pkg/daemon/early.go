package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrEarlyNotOpen means RunEarly left at least one local volume locked.
var ErrEarlyNotOpen = errors.New("local volumes not opened before local-fs.target")

// RunEarly is atrestd's early mode (atrestd --early), run once at boot by
// atrest-early.service before local-fs-pre.target, with no network: it
// opens the volumes whose every secret is under the TPM or the local
// keystore (token.Local) in one batch, so one TPM unseal serves them all,
// and returns. Volumes that need a network KMS are left to atrestd, which
// starts after network-online.target; so are volumes /etc/crypttab names
// (systemd-cryptsetup's) and configured blank devices (provisioning needs
// the recovery escrow, perhaps Vault). It takes the same single-instance
// lock as Run, so it never runs beside atrestd.
//
// It returns nil when every local volume present is open (none is a
// success too), and an error wrapping ErrEarlyNotOpen naming each that is
// not, for the unit to fail with: its mount then times out as a
// crypttab volume's would, and atrestd tries again later.
func (d *Daemon) RunEarly(ctx context.Context) error {
	lock, err := lockInstance(d.runDir())
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := d.load(); err != nil {
		return err
	}
	defer func() { _ = d.kms.Close() }()
	d.early = true
	d.rescan(ctx, true)
	d.mu.Lock()
	skipped := 0
	for k, s := range d.vols {
		if s.UUID == "" || !s.Local {
			delete(d.vols, k)
			if s.UUID != "" {
				skipped++
			}
		}
	}
	d.mu.Unlock()
	d.attempt(ctx)
	vols := d.Snapshot()
	var notOpen []string
	for _, s := range vols {
		if s.State != StateOpen {
			notOpen = append(notOpen, fmt.Sprintf("%s (%s: %s)", s.Name, s.State, s.Error))
		}
	}
	d.log.Info("early unlock done", "local", len(vols), "open", len(vols)-len(notOpen), "left_to_atrestd", skipped)
	if len(notOpen) > 0 {
		return fmt.Errorf("%w: %d of %d: %s", ErrEarlyNotOpen, len(notOpen), len(vols), strings.Join(notOpen, "; "))
	}
	return nil
}
