package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/recoverykey"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// ErrVolumeOpen: the volume is open; offline re-encryption needs it
// closed. It wraps blockdev.ErrInUse.
var ErrVolumeOpen = fmt.Errorf("%w: the volume is open (close it first: re-encryption of an open volume is not built yet)", blockdev.ErrInUse)

// ReencryptOptions tune Reencrypt.
type ReencryptOptions struct {
	// RecoveryMode is the policy for the new recovery key of a volume that
	// has one (the configured policy when empty). The old recovery key
	// cannot be re-enrolled (atrest does not know it), so it is replaced.
	RecoveryMode string
	// Show outputs a new recovery key in mode print (required there). It
	// is called before the re-encryption starts: the old recovery keyslot
	// goes only at its end, so a key that was never shown never is the
	// only one; when Show fails nothing was written.
	Show func(*ReencryptResult) error
	// Progress is called after every hotzone with the bytes done.
	Progress func(done, total uint64)
	// Hotzone is the most data one step re-encrypts (luks2.DefaultHotzone
	// when 0).
	Hotzone uint64
	// HandOver, for an open volume in re-encryption: take over what an
	// online run killed left (its devices, a held hotzone, finished and
	// let through) and stop, leaving the state cryptsetup leaves when its
	// online run stops between hotzones, which `cryptsetup reencrypt
	// --resume-only --active-name NAME` resumes (it refuses a killed
	// run's stack; docs/reencrypt.md).
	HandOver bool
}

// ReencryptResult is one re-encrypted volume.
type ReencryptResult struct {
	Name, UUID, Device string
	// OldKeyslot and NewKeyslot are the platform keyslots of the old and
	// the new volume key.
	OldKeyslot, NewKeyslot int
	// Bytes is the size of the data re-encrypted.
	Bytes uint64
	// Resumed: the run continued a re-encryption found on the device
	// (started by atrest or cryptsetup).
	Resumed bool
	// Recovery is the new recovery key (nil when the volume has none); in
	// mode print it holds the key to show once, then Wipe.
	Recovery *Recovery
	Warnings []string
	// Stopped: HandOver stopped the run; the re-encryption stands at Done
	// bytes of Bytes.
	Stopped bool
	Done    uint64
}

// Reencrypt gives a closed volume a new volume key and re-encrypts its
// data in place (docs/reencrypt.md): the platform secret is enrolled under
// the new key, a recovery key is replaced by a new one under RecoveryMode,
// and pkg/luks2 re-encrypts hotzone by hotzone in cryptsetup's on-disk
// format, so that an interrupted run is resumed by the next Reencrypt or by
// `cryptsetup reencrypt --resume-only`. A run cut short leaves the volume
// in re-encryption: it opens only after the re-encryption is finished.
func (m *Manager) Reencrypt(ctx context.Context, v *Volume, o ReencryptOptions) (res *ReencryptResult, err error) {
	defer func() { m.audit(ctx, "reencrypt", v.UUID(), v.Name, v.Device, err) }()
	c, release, err := m.begin(ctx, v, "reencrypt")
	if err != nil {
		return nil, err
	}
	defer release()
	// cryptsetup's own lock for the whole run, offline and online: a
	// cryptsetup reencrypt of this volume cannot overlap it.
	unlock, err := holdReencryption(c.v.UUID(), &c.warnings)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := c.v.Header.Reencryption(); errors.Is(err, luks2.ErrUnsupported) {
		// Another tool's mode or resilience: refused before the KMS is
		// asked, nothing written; before the token is read, since
		// cryptsetup's run bound it to two keyslots (takeCopiedToken
		// reads such a token only in a re-encryption atrest follows).
		return nil, reencryptHold(c.v)
	}
	c.takeCopiedToken()
	if slot, err := c.settleHandover(ctx); err != nil {
		return nil, err
	} else if slot >= 0 {
		c.refreshBackup(ctx)
		return &ReencryptResult{Name: c.v.Name, UUID: c.v.UUID(), Device: c.v.Device, OldKeyslot: -1, NewKeyslot: slot, Resumed: true, Warnings: c.warnings}, nil
	}
	if !c.v.Managed() {
		return nil, fmt.Errorf("reencrypt: %w", c.v.errNotManaged())
	}
	open, err := m.isOpen(c.v)
	if err != nil {
		return nil, err
	} else if open {
		// Online: through this volume's own mapping (reencrypt_online.go).
		if err := c.checkOnline(); err != nil {
			return nil, err
		}
	} else if d, err := blockdev.Inspect(c.v.Device); err != nil {
		return nil, err
	} else if err := d.CheckUnused(); err != nil {
		// Mapped by another tool, mounted, or read through a loop device:
		// the data must not change under a reader (blockdev's refusals say which).
		return nil, fmt.Errorf("reencrypt needs the device unused: %w", err)
	}
	if c.v.Platform.Policy != nil {
		return nil, fmt.Errorf("%w: reencrypt of a volume under an unlock policy is not built: every branch's keyslot would have to be re-enrolled under the new key, with each branch's factors at hand; nothing was changed (docs/reencrypt.md)", ErrInvalidArgument)
	}
	secrets := m.unwrapAll(ctx, []string{c.v.UUID()}, []*token.Token{c.v.Platform})
	defer wipeUnlocked(secrets)
	if secrets[0].err != nil {
		return nil, secrets[0].err
	}
	ps := secrets[0].ps
	res = &ReencryptResult{Name: c.v.Name, UUID: c.v.UUID(), Device: c.v.Device}
	st, err := c.v.Header.Reencryption()
	if err != nil {
		return nil, err
	}
	if st == nil && open {
		if left, err := c.finishLeftover(ps); err != nil {
			return nil, err
		} else if left {
			res.Resumed, res.Warnings = true, c.warnings
			return res, nil
		}
	}
	if o.HandOver && (st == nil || !open) {
		return nil, fmt.Errorf("%w: --hand-over is for an open volume in re-encryption (a closed one cryptsetup resumes as it is, after cryptsetup repair where a hotzone is flagged); nothing was changed", ErrInvalidArgument)
	}
	if st == nil {
		if err := c.startReencrypt(ctx, ps, o, res); err != nil {
			res.Recovery.Wipe()
			return nil, err
		}
		failpoint("reencrypt-after-start")
	} else {
		res.Resumed = true
	}
	if err := c.runReencrypt(ctx, ps, o, res); err != nil {
		res.Recovery.Wipe()
		return nil, err
	}
	if res.Stopped {
		res.Warnings = c.warnings
		return res, nil
	}
	res.Recovery.settle()
	c.refreshBackup(ctx)
	c.verifyTPM(ps)
	res.Warnings = c.warnings
	return res, nil
}

// startReencrypt puts the header into re-encryption with the new keyslots
// in one commit.
func (c *change) startReencrypt(ctx context.Context, ps *secret.Key, o ReencryptOptions, res *ReencryptResult) error {
	vk, err := c.v.Header.OpenKeyslot(c.dev, c.v.Platform.Keyslot, ps)
	if err != nil {
		return err
	}
	defer vk.Wipe()
	newVK, err := secret.Random(vk.Len())
	if err != nil {
		return err
	}
	defer newVK.Wipe()
	tpms, err := c.reencryptTPM()
	if err != nil {
		return err
	}
	defer func() {
		for _, t := range tpms {
			t.wipe()
		}
	}()
	if len(c.v.Recovery) > 0 {
		mode := c.m.recoveryMode(o.RecoveryMode)
		if mode == config.RecoveryPrint && o.Show == nil {
			return fmt.Errorf("%w: recovery mode print needs a way to show the key (ReencryptOptions.Show)", ErrInvalidArgument)
		}
		if res.Recovery, err = c.m.newRecovery(ctx, c.v.UUID(), mode); err != nil {
			return err
		}
	}
	u, err := c.v.Header.BeginReencrypt(vk, newVK)
	if err != nil {
		return err
	}
	if _, err := u.AddKeyslot(newVK, ps, luks2.KeyslotOptions{Slot: luks2.AnySlot, KDF: kdf.Platform()}); err != nil {
		return fmt.Errorf("add platform keyslot: %w", err)
	}
	for _, t := range tpms {
		// Its own token, bound to the new keyslot: the old token goes
		// with the old keyslot when the re-encryption ends.
		if err := t.add(u, newVK); err != nil {
			return err
		}
	}
	if res.Recovery != nil {
		if err := res.Recovery.enroll(u, newVK); err != nil {
			return err
		}
		// The platform token says where the recovery key went; it stays
		// bound to the old keyslot until the re-encryption rebinds it.
		tok := *c.v.Platform
		tok.Recovery = res.Recovery.record()
		data, err := tok.Marshal()
		if err != nil {
			return err
		}
		if _, err := u.SetToken(c.v.TokenID, data); err != nil {
			return err
		}
		if res.Recovery.Mode == config.RecoveryPrint {
			if err := o.Show(res); err != nil {
				return err
			}
		}
	}
	if _, err := u.CommitReencrypt(ctx, c.dev); err != nil {
		if res.Recovery != nil && res.Recovery.Mode == config.RecoveryPrint {
			return &StageError{Op: c.op, Device: c.v.Device, Err: err, State: "the recovery key shown was not enrolled; the volume is unchanged and its old recovery key still opens it"}
		}
		return c.afterFailedCommit(ctx, err)
	}
	return c.reload(ctx)
}

// runReencrypt resumes the re-encryption the header records and ends it.
func (c *change) runReencrypt(ctx context.Context, ps *secret.Key, o ReencryptOptions, res *ReencryptResult) error {
	h := c.v.Header
	keys, err := h.OpenReencryptKeys(c.dev, ps)
	if err != nil {
		return err
	}
	var on *onlineRun
	dev := luks2.Device(c.dev)
	open, err := c.m.isOpen(c.v)
	if err == nil && open {
		var st *luks2.ReencryptState
		if st, err = h.Reencryption(); err == nil {
			on, err = c.newOnlineRun(keys, st)
		}
	}
	if err != nil {
		keys.Wipe()
		return err
	}
	if on != nil {
		defer on.close()
		dev = on.dev
	}
	r, err := h.ResumeReencrypt(dev, keys.Old, keys.New)
	keys.Wipe()
	if err != nil {
		return err
	}
	defer r.Close()
	res.OldKeyslot, res.NewKeyslot, res.Bytes = keys.OldSlot, keys.NewSlot, r.Size()
	r.Rebind = map[int]int{keys.OldSlot: keys.NewSlot}
	// ReadAhead reads the next hotzone before BeforeHotzone holds it:
	// offline only.
	r.Hotzone, r.Progress, r.ReadAhead = o.Hotzone, o.Progress, on == nil
	runCtx := ctx
	if on != nil {
		// Online, a cancel stops the run between hotzones only (see
		// attach), never inside a step's header writes. A hand-over is a
		// cancel from the start: what a killed run held is finished first.
		stop := ctx
		if o.HandOver {
			var cancel context.CancelFunc
			stop, cancel = context.WithCancel(ctx)
			cancel()
		}
		on.attach(stop, r)
		runCtx = context.WithoutCancel(ctx)
	}
	if _, err := r.Run(runCtx); err != nil {
		st := r.State()
		if on != nil {
			if o.HandOver && errors.Is(err, context.Canceled) && ctx.Err() == nil {
				if err := on.stopped(st); err != nil {
					return err
				}
				res.Stopped, res.Done = true, st.Done
				return nil
			}
			err = errors.Join(err, on.stopped(st))
		}
		state := fmt.Sprintf("re-encryption stopped after %d of %d bytes; the data is intact; `atrest reencrypt %s` (or `cryptsetup reencrypt --resume-only`) continues it, and the volume opens once it is finished", st.Done, r.Size(), c.v.Name)
		return &StageError{Op: c.op, Device: c.v.Device, Err: err, State: state}
	}
	if on != nil {
		if err := on.teardown(r.Size()); err != nil {
			return err
		}
	}
	return c.reload(ctx)
}

// settleHandover completes a re-encryption another tool finished
// (cryptsetup reencrypt --resume-only on a run atrest started): cryptsetup
// removed the old keyslots and left the atrest token bound to none, and
// the old recovery token too. The atrest token is bound to the keyslot its
// secret opens now and recovery tokens bound to no keyslot are removed, in
// one commit. It returns the platform keyslot, or -1 when there was
// nothing to settle.
func (c *change) settleHandover(ctx context.Context) (int, error) {
	h := c.v.Header
	if c.v.Platform != nil || len(c.v.Unreadable) == 0 || len(c.v.Unreadable[0].Keyslots) > 0 {
		return -1, nil
	}
	if st, err := h.Reencryption(); st != nil || err != nil {
		return -1, nil
	}
	id := c.v.Unreadable[0].ID
	var doc map[string]any
	if err := json.Unmarshal(h.Tokens[id].JSON(), &doc); err != nil {
		return -1, nil
	}
	bind := func(slot int) ([]byte, *token.Token, error) {
		doc["keyslots"] = []string{strconv.Itoa(slot)}
		data, err := json.Marshal(doc)
		if err != nil {
			return nil, nil, err
		}
		tok, err := token.Parse(data)
		return data, tok, err
	}
	_, tok, err := bind(0)
	if err != nil {
		return -1, nil // unreadable for another reason: status says why
	}
	secrets := c.m.unwrapAll(ctx, []string{h.UUID}, []*token.Token{tok})
	defer wipeUnlocked(secrets)
	if secrets[0].err != nil {
		return -1, secrets[0].err
	}
	bound := map[int]bool{}
	for _, t := range h.Tokens {
		for _, ks := range t.Keyslots {
			bound[ks] = true
		}
	}
	for _, slot := range h.KeyslotIDs() {
		if bound[slot] || h.Keyslots[slot].Type != "luks2" {
			continue
		}
		vk, err := h.OpenKeyslot(c.dev, slot, secrets[0].ps)
		if err != nil {
			continue
		}
		vk.Wipe()
		data, _, err := bind(slot)
		if err != nil {
			return -1, err
		}
		u, err := h.Begin()
		if err != nil {
			return -1, err
		}
		if _, err := u.SetToken(id, data); err != nil {
			return -1, err
		}
		for tid, t := range h.Tokens {
			if t.Type == recoverykey.TokenType && len(t.Keyslots) == 0 {
				if err := u.RemoveToken(tid); err != nil {
					return -1, err
				}
			}
		}
		if _, err := u.Commit(ctx, c.dev); err != nil {
			return -1, c.afterFailedCommit(ctx, err)
		}
		return slot, c.reload(ctx)
	}
	return -1, nil
}
