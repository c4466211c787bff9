package volume

import (
	"context"
	"errors"
	"fmt"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

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
	// Resume only continues a re-encryption found on the device (or
	// settles one another tool finished); without one nothing is done
	// (the result says Unchanged), as policy set --resume.
	Resume bool
	// PIN is the PIN of the volume's PIN TPM keyslots: each is re-sealed
	// with it, after one unseal of the old keyslot proved it, before
	// anything is written. Without it a PIN keyslot is refused. The
	// caller wipes it.
	PIN *secret.Key
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
	// Unchanged: with Resume, there was no re-encryption to continue;
	// nothing was written.
	Unchanged bool
	// Recovery is the new recovery key (nil when the volume has none); in
	// mode print it holds the key to show once, then Wipe.
	Recovery *Recovery
	// Policy is set for a volume under an unlock policy: the policy made
	// again under the new key, and its keyslots before and after.
	Policy   *ReencryptPolicy
	Warnings []string
	// Stopped: HandOver stopped the run; the re-encryption stands at Done
	// bytes of Bytes.
	Stopped bool
	Done    uint64
}

// ReencryptPolicy is a policy volume's policy across its re-encryption.
type ReencryptPolicy struct {
	Expr     string
	From, To []int
}

// Reencrypt gives a closed volume a new volume key and re-encrypts its
// data in place (docs/reencrypt.md): the platform secret is enrolled under
// the new key, a recovery key is replaced by a new one under RecoveryMode,
// and pkg/luks2 re-encrypts hotzone by hotzone in cryptsetup's on-disk
// format, so that an interrupted run is resumed by the next Reencrypt or by
// `cryptsetup reencrypt --resume-only`. A run cut short leaves the volume
// in re-encryption: it opens only after the re-encryption is finished.
// A volume under an unlock policy gets its policy again under the new key
// (reencrypt_policy.go): fresh key material from every factor, each new
// keyslot proven before the run.
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
	if err := c.foreignPolicyRun(); err != nil {
		return nil, err
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
	st, err := c.v.Header.Reencryption()
	if err != nil {
		return nil, err
	}
	if st == nil && o.Resume && !open {
		// Before the KMS is asked.
		return c.resumeNothing(ctx), nil
	}
	if st == nil && len(c.v.Others) > 0 {
		return nil, fmt.Errorf("%w: %s has %d extra platform token(s) of a rekey or policy change that was cut short: finish it first (atrest status %s names the command); nothing was changed", ErrInvalidArgument, c.v.Ref(), len(c.v.Others), c.v.Ref())
	}
	// The old key's secret; in re-encryption also the new key's (a
	// policy volume's new policy token).
	toks := []*token.Token{c.v.Platform}
	if st != nil {
		toks = append(toks, othersOf(c.v)...)
	}
	uuids := make([]string, len(toks))
	for i := range uuids {
		uuids[i] = c.v.UUID()
	}
	secrets := m.unwrapAll(ctx, uuids, toks)
	defer wipeUnlocked(secrets)
	passes := make([]*secret.Key, len(secrets))
	for i, s := range secrets {
		if s.err != nil {
			return nil, s.err
		}
		passes[i] = s.ps
	}
	res = &ReencryptResult{Name: c.v.Name, UUID: c.v.UUID(), Device: c.v.Device}
	if p := c.v.Platform.Policy; p != nil {
		res.Policy = &ReencryptPolicy{Expr: p.Expr, From: c.v.Platform.Slots()}
	}
	if st == nil && open {
		if left, err := c.finishLeftover(secrets[0].slot, passes[0]); err != nil {
			return nil, err
		} else if left {
			res.Resumed, res.Warnings = true, c.warnings
			return res, nil
		}
	}
	if st == nil && o.Resume {
		return c.resumeNothing(ctx), nil
	}
	if o.HandOver && (st == nil || !open) {
		return nil, fmt.Errorf("%w: --hand-over is for an open volume in re-encryption (a closed one cryptsetup resumes as it is, after cryptsetup repair where a hotzone is flagged); nothing was changed", ErrInvalidArgument)
	}
	if st == nil {
		newPass, err := c.startReencrypt(ctx, secrets[0], o, res)
		if err != nil {
			res.Recovery.Wipe()
			return nil, err
		}
		if newPass != nil {
			defer newPass.Wipe()
			passes = append(passes, newPass)
		}
		failpoint("reencrypt-after-start")
	} else {
		res.Resumed = true
	}
	if err := c.runReencrypt(ctx, passes, o, res); err != nil {
		res.Recovery.Wipe()
		return nil, err
	}
	if res.Stopped {
		res.Warnings = c.warnings
		return res, nil
	}
	failpoint("reencrypt-after-run")
	if res.Policy != nil && c.v.Managed() {
		res.Policy.To = c.v.Platform.Slots()
	}
	res.Recovery.settle()
	c.refreshBackup(ctx)
	c.verifyTPM(passes, o.PIN)
	res.Warnings = c.warnings
	return res, nil
}

// startReencrypt puts the header into re-encryption with the new keyslots
// in one commit; old is the old key's secret and the keyslot it opens.
// A policy volume's new policy is made first (every factor must answer)
// and its keyslots are proven after the commit; the secret returned (nil
// for a plain volume, whose platform secret opens both keys) opens a
// keyslot of the new key, for the run. The caller wipes it.
func (c *change) startReencrypt(ctx context.Context, old unlocked, o ReencryptOptions, res *ReencryptResult) (*secret.Key, error) {
	vk, err := c.v.Header.OpenKeyslot(c.dev, old.slot, old.ps)
	if err != nil {
		return nil, err
	}
	defer vk.Wipe()
	newVK, err := secret.Random(vk.Len())
	if err != nil {
		return nil, err
	}
	defer newVK.Wipe()
	var pol *reencPolicy
	if c.v.Platform.Policy != nil {
		// Before anything else: a factor that does not answer refuses
		// the run here, named, with nothing written.
		if pol, err = c.newPolicyKeys(ctx); err != nil {
			return nil, err
		}
		defer pol.wipe()
	}
	tpms, err := c.reencryptTPM(vk, o.PIN)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, t := range tpms {
			t.wipe()
		}
	}()
	if len(c.v.Recovery) > 0 {
		mode := c.m.recoveryMode(o.RecoveryMode)
		if mode == config.RecoveryPrint && o.Show == nil {
			return nil, fmt.Errorf("%w: recovery mode print needs a way to show the key (ReencryptOptions.Show)", ErrInvalidArgument)
		}
		if res.Recovery, err = c.m.newRecovery(ctx, c.v.UUID(), mode); err != nil {
			return nil, err
		}
	}
	u, err := c.v.Header.BeginReencrypt(vk, newVK)
	if err != nil {
		return nil, err
	}
	if pol == nil {
		if _, err := u.AddKeyslot(newVK, old.ps, luks2.KeyslotOptions{Slot: luks2.AnySlot, KDF: kdf.Platform()}); err != nil {
			return nil, fmt.Errorf("add platform keyslot: %w", err)
		}
	}
	for _, t := range tpms {
		// Its own token, bound to the new keyslot: the old token goes
		// with the old keyslot when the re-encryption ends.
		if err := t.add(u, newVK); err != nil {
			return nil, err
		}
	}
	if res.Recovery != nil {
		// Under the new key and the old: the new recovery key alone
		// gives both keys while the re-encryption is under way.
		if err := res.Recovery.enroll(u, newVK, vk); err != nil {
			return nil, err
		}
	}
	if pol != nil {
		// The new policy's keyslots and token, as policy set adds them;
		// the old policy token goes with the old keyslots at the end.
		if err := pol.add(u, newVK, res.Recovery, c.v.Platform); err != nil {
			return nil, err
		}
	} else if res.Recovery != nil {
		// The platform token says where the recovery key went; it stays
		// bound to the old keyslot until the re-encryption rebinds it.
		tok := *c.v.Platform
		tok.Recovery = res.Recovery.record()
		data, err := tok.Marshal()
		if err != nil {
			return nil, err
		}
		if _, err := u.SetToken(c.v.TokenID, data); err != nil {
			return nil, err
		}
	}
	if res.Recovery != nil && res.Recovery.Mode == config.RecoveryPrint {
		if err := o.Show(res); err != nil {
			return nil, err
		}
	}
	failpoint("reencrypt-before-start")
	if _, err := u.CommitReencrypt(ctx, c.dev); err != nil {
		if res.Recovery != nil && res.Recovery.Mode == config.RecoveryPrint {
			return nil, &StageError{Op: c.op, Device: c.v.Device, Err: err, State: "the recovery key shown was not enrolled; the volume is unchanged and its old recovery key still opens it"}
		}
		return nil, c.afterFailedCommit(ctx, err)
	}
	if err := c.reload(ctx); err != nil {
		return nil, err
	}
	if err := c.proveStart(ctx, pol, res.Recovery, tpms, newVK); err != nil {
		return nil, err
	}
	if pol == nil {
		return nil, nil
	}
	return pol.firstSecret()
}

// runReencrypt resumes the re-encryption the header records and ends it;
// passes open a keyslot of the old key and one of the new.
func (c *change) runReencrypt(ctx context.Context, passes []*secret.Key, o ReencryptOptions, res *ReencryptResult) error {
	h := c.v.Header
	keys, err := h.OpenReencryptKeys(c.dev, passes...)
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
	if c.v.Platform.Policy == nil {
		// One platform secret under both keys: its token moves to the
		// new keyslot. A policy volume's new token is bound to its new
		// keyslots already, and the old one goes with the old keyslots.
		r.Rebind = map[int]int{keys.OldSlot: keys.NewSlot}
	}
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

// finalKey opens, once the re-encryption has ended, a keyslot of the
// platform token with one of passes (the new policy's secret, or the
// platform secret) and returns the volume key, nil when none opens. The
// caller wipes it.
func (c *change) finalKey(passes []*secret.Key) *secret.Key {
	if !c.v.Managed() {
		return nil
	}
	for _, slot := range c.v.Platform.Slots() {
		for _, p := range passes {
			if vk, err := c.v.Header.OpenKeyslot(c.dev, slot, p); err == nil {
				return vk
			}
		}
	}
	return nil
}
