package volume

import (
	"context"
	"fmt"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// EncryptOptions tune Encrypt.
type EncryptOptions struct {
	// Device holds the file system; Name is the volume's mapping name.
	Device, Name string
	// Recovery overrides the configured recovery policy.
	Recovery string
	// Show outputs a recovery key in mode print (required there). It is
	// called before anything is written; when it fails nothing was.
	Show func(*EncryptResult) error
	// Progress is called at the start and after every hotzone with the
	// plaintext bytes encrypted.
	Progress func(done, total uint64)
}

// EncryptResult is a device encrypted in place.
type EncryptResult struct {
	Device, Name, UUID string
	PlatformKeyslot    int
	// Bytes is the size of the file system encrypted.
	Bytes uint64
	// Resumed: the run continued an encryption in place found on the
	// device (started by atrest or cryptsetup).
	Resumed bool
	// Recovery is the recovery key arrangement (nil when resumed); in mode
	// print it holds the key shown.
	Recovery *Recovery
	Backup   string
	Warnings []string
}

// Encrypt encrypts the file system (ext2/3/4, btrfs, XFS) on an unused device in place,
// offline (docs/reencrypt.md, stage 3): CheckEncryptInPlace's refusals
// first; then the platform secret and the recovery key of the one enrol
// sequence (the KMS and the escrow are asked before anything is written;
// a key printed is shown before), pkg/luks2's start (the first 16 MiB
// copied to the end, the header with the datashift keyslot) and its run,
// hotzone by hotzone from the end; at the end the keyslots are verified
// and the header backed up. Interrupted, the next Encrypt of the device
// resumes (as it resumes one `cryptsetup reencrypt --encrypt` started),
// and one cut short before its header landed is first put back.
func (m *Manager) Encrypt(ctx context.Context, o EncryptOptions) (res *EncryptResult, err error) {
	out := &EncryptResult{Device: o.Device, Name: o.Name, PlatformKeyslot: -1}
	defer func() { m.audit(ctx, "encrypt", out.UUID, o.Name, o.Device, err) }()
	res = out
	mode, release, err := m.newVolume(ctx, o.Name, o.Recovery)
	if err != nil {
		return nil, err
	}
	defer release()
	d, err := blockdev.Inspect(o.Device)
	if err != nil {
		return nil, err
	}
	if err := d.CheckUnused(); err != nil {
		return nil, fmt.Errorf("encryption in place needs the device unused and unmounted: %w", err)
	}
	hdl, err := blockdev.OpenExclusive(ctx, d)
	if err != nil {
		return nil, err
	}
	defer hdl.Close()
	dev := fileDevice{File: hdl.File, h: hdl, size: d.Size}
	res.Device = d.Path
	if restored, err := luks2.RecoverEncryptInit(ctx, dev, luks2.DefaultDataOffset); err != nil {
		return nil, err
	} else if restored {
		res.Warnings = append(res.Warnings, "an earlier encryption was cut short before its header was written: the device's first 16 MiB were put back from their copy, and it starts again")
	}
	if h, err := luks2.Read(ctx, dev); err == nil {
		if st, err := h.EncryptionInPlace(); err != nil {
			return nil, err
		} else if st != nil {
			unlock, err := holdReencryption(h.UUID, &res.Warnings)
			if err != nil {
				return nil, err
			}
			defer unlock()
			if err := m.resumeEncrypt(ctx, dev, o, res); err != nil {
				return nil, err
			}
			return res, nil
		}
	}
	if mode == config.RecoveryPrint && o.Show == nil {
		return nil, fmt.Errorf("%w: recovery mode print needs a way to show the key (EncryptOptions.Show)", ErrInvalidArgument)
	}
	plan, err := CheckEncryptInPlace(ctx, d.Path)
	if err != nil {
		return nil, err
	}
	if err := m.checkNameFree(ctx, o.Name, "", d.Path); err != nil {
		return nil, err
	}
	h, vk, err := luks2.New(luks2.FormatOptions{SectorSize: 4096, Label: o.Name, Subsystem: "atrest"})
	if err != nil {
		return nil, err
	}
	defer vk.Wipe()
	res.UUID, res.Bytes = h.UUID, plan.DeviceSize-EncryptReduce
	// cryptsetup's lock of the new UUID, as cryptsetup reencrypt --encrypt
	// holds it, for the whole run.
	unlock, err := holdReencryption(h.UUID, &res.Warnings)
	if err != nil {
		return nil, err
	}
	defer unlock()
	ps, tok, err := m.protect(ctx, h.UUID, o.Name)
	if err != nil {
		return nil, err
	}
	defer ps.Wipe()
	if res.Recovery, err = m.plannedRecovery(ctx, h.UUID, mode); err != nil {
		return nil, err
	}
	tok.Recovery = res.Recovery.record()
	untouched := "nothing was written to the device"
	fail := func(state string, err error) (*EncryptResult, error) {
		res.Recovery.Wipe()
		return nil, &StageError{Op: "encrypt", Device: d.Path, State: state, Err: err}
	}
	k := &newKeys{vk: vk, ps: ps, tok: tok, rec: res.Recovery}
	u, err := h.BeginEncrypt(vk, uint64(d.Size))
	if err == nil {
		err = k.add(u)
	}
	if err != nil {
		return fail(untouched, err)
	}
	res.PlatformKeyslot = k.slot
	if mode == config.RecoveryPrint {
		if err := o.Show(res); err != nil {
			return fail(untouched, err)
		}
	}
	// The escrow is create-only for the node: the key goes there before
	// the device changes, since an encryption cannot be taken back.
	if err := res.Recovery.deposit(ctx); err != nil {
		return fail(untouched, err)
	}
	started, err := u.CommitEncrypt(ctx, dev)
	if err != nil {
		return fail("the start of the device may be partly overwritten, its copy at the end is marked: run atrest encrypt again, which puts it back or resumes", err)
	}
	failpoint("encrypt-after-start")
	final, err := runEncrypt(ctx, started, dev, vk, o)
	if err != nil {
		return fail(fmt.Sprintf("encryption in place stopped; the data is intact; run atrest encrypt %s --name %s again (or cryptsetup reencrypt --resume-only) to continue", d.Path, o.Name), err)
	}
	if err := m.verifyKeys(ctx, final, dev, k); err != nil {
		return fail("encrypted, but the new keyslots did not open: keep the recovery key and check the volume with atrest status", fmt.Errorf("%w: %w", ErrVerify, err))
	}
	res.Recovery.settle()
	m.finishEncrypt(ctx, dev, res)
	return res, nil
}

// runEncrypt resumes the encryption in place h records with the volume
// key vk and ends it, returning the final header.
func runEncrypt(ctx context.Context, h *luks2.Header, dev luks2.Device, vk *secret.Key, o EncryptOptions) (*luks2.Header, error) {
	r, err := h.ResumeEncrypt(dev, vk)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	r.Progress = o.Progress
	return r.Run(ctx)
}

// resumeEncrypt continues an encryption in place found on dev: the
// platform secret of its atrest token, unwrapped through the KMS, opens
// the key.
func (m *Manager) resumeEncrypt(ctx context.Context, dev fileDevice, o EncryptOptions, res *EncryptResult) error {
	res.Resumed = true
	// The header is read through the handle this run holds (the disk's
	// lock with it), not looked up again.
	h, err := luks2.Read(ctx, dev)
	if err != nil {
		return err
	}
	var tok *token.Token
	for _, id := range h.TokenIDs() {
		if t, err := token.Parse(h.Tokens[id].JSON()); err == nil && t.Policy == nil {
			tok = t
			break
		}
	}
	if tok == nil {
		return fmt.Errorf("%w: an encryption in place another tool started, without an atrest token: finish it with cryptsetup reencrypt --resume-only, then take the volume over with atrest adopt", ErrNotManaged)
	}
	res.UUID, res.Name, res.PlatformKeyslot = h.UUID, tok.Name, tok.Keyslot
	secrets := m.unwrapAll(ctx, []string{h.UUID}, []*token.Token{tok})
	defer wipeUnlocked(secrets)
	if secrets[0].err != nil {
		return secrets[0].err
	}
	st, err := h.EncryptionInPlace()
	if err != nil {
		return err
	}
	res.Bytes = st.Size
	vk, err := h.OpenEncryptKey(dev, secrets[0].ps)
	if err != nil {
		return err
	}
	defer vk.Wipe()
	final, err := runEncrypt(ctx, h, dev, vk, o)
	if err != nil {
		return &StageError{Op: "encrypt", Device: res.Device, Err: err,
			State: fmt.Sprintf("encryption in place stopped; the data is intact; run atrest encrypt %s --name %s again to continue", res.Device, res.Name)}
	}
	if k, _, err := final.Open(dev, secrets[0].ps); err != nil {
		return fmt.Errorf("%w: the platform secret does not open the encrypted volume: %w", ErrVerify, err)
	} else {
		k.Wipe()
	}
	m.finishEncrypt(ctx, dev, res)
	return nil
}

// finishEncrypt backs the new header up.
func (m *Manager) finishEncrypt(ctx context.Context, dev fileDevice, res *EncryptResult) {
	if err := m.saveBackup(ctx, dev, res.UUID, nil); err != nil {
		res.Warnings = append(res.Warnings, err.Error()+"; run: atrest header backup "+res.Name)
	} else {
		res.Backup = m.backupPath(res.UUID)
	}
}
