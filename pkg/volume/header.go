package volume

import (
	"context"
	"errors"
	"fmt"

	"github.com/atrest/atrest/pkg/luks2"
)

// HeaderBackup writes a backup of v's header: to path (a new root-only file
// in cryptsetup's luksHeaderBackup format), or when path is empty to the
// state directory, where status checks that it is current.
func (m *Manager) HeaderBackup(ctx context.Context, v *Volume, path string) (written string, err error) {
	defer func() { m.audit(ctx, "header-backup", v.UUID(), v.Name, v.Device, err) }()
	f, err := v.open(false)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if path == "" {
		return m.backupPath(v.UUID()), m.saveBackup(ctx, f, v.UUID(), v.Header)
	}
	return path, luks2.BackupFile(ctx, f, path)
}

// RestoreOptions tune HeaderRestore.
type RestoreOptions struct {
	// Backup is the backup file; empty means the state directory's backup
	// of the device's volume.
	Backup string
	// Force restores a backup of another volume (UUID mismatch) or onto a
	// device whose header cannot be read at all.
	Force bool
}

// HeaderRestore writes a header backup back to device. The header on the
// device, when it can be read, is first saved as the .prev backup, so a
// wrong restore can be undone.
func (m *Manager) HeaderRestore(ctx context.Context, device string, o RestoreOptions) (h *luks2.Header, err error) {
	uuid := ""
	defer func() { m.audit(ctx, "header-restore", uuid, "", device, err) }()
	dev, err := luks2.OpenFile(device, true)
	if err != nil {
		return nil, fmt.Errorf("open %s for writing: %w", device, err)
	}
	defer dev.Close()
	current, readErr := luks2.Read(ctx, dev)
	if readErr == nil {
		uuid = current.UUID
	}
	backup := o.Backup
	if backup == "" {
		if readErr != nil {
			return nil, fmt.Errorf("the header of %s cannot be read (%w), so its backup cannot be found by UUID: name the backup file", device, readErr)
		}
		backup = m.backupPath(uuid)
	}
	bf, err := luks2.OpenFile(backup, false)
	if err != nil {
		return nil, fmt.Errorf("header backup: %w", err)
	}
	bh, err := luks2.Read(ctx, bf)
	bf.Close()
	if err != nil {
		return nil, fmt.Errorf("header backup %s: %w", backup, err)
	}
	if uuid == "" {
		uuid = bh.UUID
	}
	release, err := m.lock(ctx, bh.UUID)
	if err != nil {
		return nil, err
	}
	defer release()
	if readErr == nil && backup != m.backupPath(uuid) {
		if err := m.saveBackup(ctx, dev, current.UUID, current); err != nil {
			return nil, err
		}
	}
	h, err = luks2.RestoreFile(ctx, dev, backup, luks2.RestoreOptions{Force: o.Force})
	if err != nil {
		return nil, err
	}
	// The restored header has a new sequence id (above the one it
	// replaced): back it up, so the state directory's backup is current
	// again and the header it replaced stays as .prev.
	if err := m.saveBackup(ctx, dev, h.UUID, h); err != nil {
		return h, &StageError{Op: "header restore", Device: device, Err: err,
			State: "the header was restored; its backup in the state directory is not current: run atrest header backup " + device}
	}
	return h, nil
}

// CheckResult is what HeaderCheck found and did.
type CheckResult struct {
	Device   string       `json:"device"`
	UUID     string       `json:"uuid,omitempty"`
	Header   HeaderStatus `json:"header"`
	Repaired bool         `json:"repaired"`
	// NeedsRepair: a copy is damaged or older than the other and was not
	// repaired (status calls this "needs repair"; the CLI exits 3).
	NeedsRepair bool `json:"needs_repair"`
	// Backup is a backup that can restore a header damaged beyond repair.
	Backup string `json:"backup,omitempty"`
	// DataProblem, when set, says that the device ends before or inside
	// the data segment (truncated to its header, say): the header is fine,
	// the volume is not (the CLI exits 3).
	DataProblem string `json:"data_problem,omitempty"`
}

// dataProblem describes h.Data.Err for status and header check.
func dataProblem(h *luks2.Header) string {
	return fmt.Sprintf("the device is %d bytes and holds no complete data area: %v", h.Data.DeviceSize, h.Data.Err)
}

// HeaderCheck validates both header copies of device; with repair, a
// damaged or outdated copy is rewritten from the good one. When both are
// damaged (luks2.ErrHeaderDamaged), gone (luks2.ErrNotLUKS) or
// unreadable (luks2.ErrHeaderUnreadable), the error names the backup to
// restore if the state directory has one of this device.
func (m *Manager) HeaderCheck(ctx context.Context, device string, repair bool) (_ *CheckResult, err error) {
	// The deferred audit reads res, not the named result: every early
	// return below sets the result to nil.
	res := &CheckResult{Device: device}
	defer func() { m.audit(ctx, "header-check", res.UUID, "", device, err) }()
	f, err := luks2.OpenFile(device, repair)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := luks2.Read(ctx, f)
	unreadable := errors.Is(err, luks2.ErrHeaderUnreadable)
	if unreadable || errors.Is(err, luks2.ErrHeaderDamaged) || errors.Is(err, luks2.ErrNotLUKS) {
		if b := m.backupForDevice(device); b != "" {
			res.Backup = b
			how := fmt.Sprintf("restore it: atrest header restore %s --backup %s", device, b)
			if unreadable {
				how = fmt.Sprintf("writing the header again may make the disk remap its sectors: atrest header restore %s --backup %s --force", device, b)
			}
			return res, fmt.Errorf("%w; %s", err, how)
		}
		return res, err
	}
	if err != nil {
		return nil, err
	}
	res.UUID = h.UUID
	res.Header.Primary, res.Header.Secondary = copyState(h.Copies[0]), copyState(h.Copies[1])
	res.NeedsRepair = h.NeedsRepair()
	if h.Data.Err != nil {
		res.DataProblem = dataProblem(h)
	}
	if !res.NeedsRepair || !repair {
		return res, nil
	}
	release, err := m.lock(ctx, h.UUID)
	if err != nil {
		return nil, err
	}
	defer release()
	if _, err := luks2.Repair(ctx, f); err != nil {
		return res, err
	}
	res.Repaired = true
	if h, err = luks2.Read(ctx, f); err == nil {
		res.Header.Primary, res.Header.Secondary = copyState(h.Copies[0]), copyState(h.Copies[1])
		res.NeedsRepair = h.NeedsRepair()
	}
	return res, err
}
