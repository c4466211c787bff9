package volume

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/policy"
	"github.com/atrest/atrest/pkg/recoverykey"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
	"github.com/atrest/atrest/pkg/tpm2"
)

// A platform change (rekey, reseal) runs in header commits that are each
// crash-safe on its own (pkg/luks2):
//
//  1. add the new platform keyslot and token (and a new recovery keyslot);
//     the volume now opens with old and new key material alike;
//  2. after the new material was verified through the KMS, kill the old
//     platform keyslots and remove their tokens;
//  3. with a new recovery key, kill the old recovery keyslots, in mode
//     print only after the caller showed the key (finishRecovery).
//
// Recovery rotate runs 1 and 3 for the recovery key alone. A journal
// names the old and new objects and whether the new recovery key was
// verified and shown. A process that dies between commits 1 and 2 leaves
// two atrest tokens in the header; finishInterrupted, run by the next
// change of that volume (and reported by status), verifies the newer one
// and completes the change, or removes it again when it does not open,
// and settleRecovery keeps the new or the old recovery keyslots as the
// journal says.

// change is one platform change in progress.
type change struct {
	m   *Manager
	v   *Volume
	dev *luks2.File
	op  string
	// under, when set, gives the unlock policy of the new key material
	// (policy set; nil: the kms: backend alone) instead of the
	// configuration's.
	under func() *policy.Policy
	// warnings: what went wrong after the change was complete (a header
	// backup that could not be written); the change itself stands.
	warnings []string
	// known: the KMS's answers given ahead for a batch of changes
	// (RekeyEach); nil: the change asks the KMS itself.
	known *answers
}

// refreshBackup writes the state directory's backup after a completed
// change. A failure is a warning, not the change's error: the header on
// the device is changed and good, and the caller must still be told so
// (and shown a new recovery key).
func (c *change) refreshBackup(ctx context.Context) {
	if err := c.m.saveBackup(ctx, c.dev, c.v.UUID(), c.v.Header); err != nil {
		c.warnings = append(c.warnings, err.Error()+"; run: atrest header backup "+c.v.Ref())
	}
}

// reload reads the header again (under the volume lock, the header may
// have changed since v was found); one the device still holds byte for
// byte is not parsed again (luks2.Reread).
func (c *change) reload(ctx context.Context) error {
	h, err := luks2.Reread(ctx, c.dev, c.v.Header)
	if err != nil {
		return err
	}
	v, err := c.m.fromHeader(c.v.Device, h)
	if err != nil {
		return err
	}
	c.v = v
	return nil
}

// replacePlatform moves v to a new platform secret opened by vk, and when
// rec is not nil to a new recovery key. The old platform keyslots are
// removed once the new secret has been unwrapped by the KMS and has opened
// its keyslot; the old recovery keyslots (with rec) once the new recovery
// key opened its keyslot and, in mode print, show returned without error
// (finishRecovery). show is called with the new keyslot and token.
func (c *change) replacePlatform(ctx context.Context, vk *secret.Key, rec *Recovery, show func(slot int, tok *token.Token) error) (slot int, tok *token.Token, err error) {
	v := c.v
	if err := c.m.ensureBackup(ctx, c.dev, v.Header); err != nil {
		return 0, nil, err
	}
	p := c.m.cfg.PolicyFor(v.Name)
	if c.under != nil {
		p = c.under()
	}
	var ps *secret.Key
	if p == nil {
		ps, tok = c.known.takeFresh(v.UUID())
	}
	if ps == nil {
		if ps, tok, err = c.m.protectUnder(ctx, v.UUID(), v.Name, p); err != nil {
			return 0, nil, err
		}
	}
	defer ps.Wipe()
	if rec != nil {
		tok.Recovery = rec.record()
	} else if v.Managed() {
		tok.Recovery = v.Platform.Recovery
	}
	j := &journal{Op: c.op, Started: c.m.now().UTC(), OldKeyslot: -1, OldToken: -1, NewKeyslot: -1, NewToken: -1}
	if v.Managed() {
		j.OldKeyslot, j.OldToken = v.Platform.Keyslot, v.TokenID
	}
	if rec != nil {
		j.Recovery, j.RecoveryMode, j.OldRecovery = true, rec.Mode, v.Recovery
		if v.Managed() {
			j.OldRecord = v.Platform.Recovery
		}
	}
	if err := c.m.writeJournal(v.UUID(), j); err != nil {
		return 0, nil, err
	}
	failpoint(c.op + "-after-journal")

	k := &newKeys{vk: vk, ps: ps, tok: tok, rec: rec, known: c.known}
	err = c.commitKeys(ctx, k, nil, func() error {
		j.NewKeyslot, j.NewToken = k.slot, k.id
		return c.m.writeJournal(v.UUID(), j)
	})
	if err != nil {
		return 0, nil, err
	}
	slot = k.slot
	if rec != nil {
		j.Verified = true
		if err := c.m.writeJournal(v.UUID(), j); err != nil {
			return 0, nil, err
		}
	}
	failpoint(c.op + "-after-verify")

	old := []int{}
	if j.OldKeyslot >= 0 {
		old = append(old, v.Platform.Slots()...)
	}
	for _, t := range v.Others {
		old = append(old, t.Slots()...)
	}
	if err := c.remove(ctx, old, nil); err != nil {
		return 0, nil, &StageError{Op: c.op, Device: v.Device, Err: err,
			State: fmt.Sprintf("the new keyslot %d works; the old keyslots %v are still there: run atrest rekey %s again to finish", slot, old, v.Name)}
	}
	failpoint(c.op + "-after-remove")
	c.destroyOldKV(ctx, v)
	if rec != nil {
		if err := c.finishRecovery(ctx, j, rec, func() error { return show(slot, tok) }); err != nil {
			return 0, nil, err
		}
	}
	if err := c.m.clearJournal(v.UUID()); err != nil {
		return 0, nil, err
	}
	failpoint(c.op + "-after-clear")
	c.refreshBackup(ctx)
	return slot, tok, nil
}

// finishRecovery ends the recovery part of a change whose new recovery key
// rec is enrolled and verified (journal j says so): in mode print it has
// show output the key first and journals that it did, then the old
// recovery keyslots go. When show fails, the new recovery keyslot goes
// instead and the old recovery key stays the volume's.
func (c *change) finishRecovery(ctx context.Context, j *journal, rec *Recovery, show func() error) error {
	if rec.Mode == config.RecoveryPrint {
		if err := show(); err != nil {
			state := "the new recovery keyslot was removed again; the old recovery key stays the volume's"
			rerr := c.settleRecovery(ctx, j, true)
			if rerr == nil {
				rerr = c.m.clearJournal(c.v.UUID())
			}
			if rerr == nil {
				rerr = c.m.saveBackup(ctx, c.dev, c.v.UUID(), c.v.Header)
			}
			if rerr != nil {
				state = fmt.Sprintf("the old recovery key still opens the volume; finishing failed (%v): the next rekey or recovery rotate of %s removes the new recovery keyslot %d", rerr, c.v.Name, rec.Keyslot)
			}
			return &StageError{Op: c.op, Device: c.v.Device, State: state, Err: fmt.Errorf("the new recovery key could not be shown: %w", err)}
		}
		j.Shown = true
		if err := c.m.writeJournal(c.v.UUID(), j); err != nil {
			return &StageError{Op: c.op, Device: c.v.Device, Err: err,
				State: fmt.Sprintf("the recovery key shown works (keyslot %d); the old recovery keyslots %v are still there", rec.Keyslot, j.OldRecovery)}
		}
		failpoint(c.op + "-after-show")
	}
	if err := c.settleRecovery(ctx, j, true); err != nil {
		return &StageError{Op: c.op, Device: c.v.Device, Err: err,
			State: fmt.Sprintf("the new recovery key works (keyslot %d); the old recovery keyslots %v are still there: the next rekey or recovery rotate of %s removes them", rec.Keyslot, j.OldRecovery, c.v.Name)}
	}
	failpoint(c.op + "-after-recovery-remove")
	return nil
}

// verify checks tok's keyslot through the KMS (verifyToken) in the
// header as it is now.
func (c *change) verify(ctx context.Context, tok *token.Token, vk *secret.Key) error {
	return c.m.verifyTokenFrom(ctx, c.known, c.v.Header, c.dev, tok, vk)
}

// remove kills keyslots and every atrest or systemd-recovery token bound
// only to them, in one commit. With record set, the same commit makes the
// platform token record it as its recovery arrangement.
func (c *change) remove(ctx context.Context, slots []int, record *string) error {
	if err := c.reload(ctx); err != nil {
		return err
	}
	h := c.v.Header
	u, err := h.Begin()
	if err != nil {
		return err
	}
	gone := map[int]bool{}
	for _, s := range slots {
		if _, ok := h.Keyslots[s]; !ok {
			continue
		}
		if err := u.KillKeyslot(s); err != nil {
			return err
		}
		gone[s] = true
	}
	rerecord := record != nil && c.v.Managed() && c.v.Platform.Recovery != *record
	if len(gone) == 0 && !rerecord {
		return nil
	}
	for _, id := range h.TokenIDs() {
		t := h.Tokens[id]
		if t.Type != token.Type && t.Type != recoverykey.TokenType && t.Type != tpm2.TokenType {
			continue
		}
		if !slices.ContainsFunc(t.Keyslots, func(s int) bool { return !gone[s] }) {
			if err := u.RemoveToken(id); err != nil {
				return err
			}
		}
	}
	if rerecord && !gone[c.v.Platform.Keyslot] {
		next := *c.v.Platform
		next.Recovery = *record
		data, err := next.Marshal()
		if err != nil {
			return err
		}
		if _, err := u.SetToken(c.v.TokenID, data); err != nil {
			return err
		}
	}
	if _, err := u.Commit(ctx, c.dev); err != nil {
		return err
	}
	return c.reload(ctx)
}

// afterFailedCommit reports a commit that failed: the header on the device
// is the old or the new one, and the next change sorts it out.
func (c *change) afterFailedCommit(ctx context.Context, err error) error {
	state := "the volume opens with its old key material"
	if rerr := c.reload(ctx); rerr == nil && len(c.v.Others) > 0 {
		state = "the new keyslot may be on the device next to the old one; run the command again to finish or undo it"
	}
	return &StageError{Op: c.op, Device: c.v.Device, State: state, Err: err}
}

// destroyOldKV removes vault-kv secrets that no token names any more.
func (c *change) destroyOldKV(ctx context.Context, before *Volume) {
	olds := []*token.Token{}
	if before.Managed() {
		olds = append(olds, before.Platform)
	}
	for _, t := range before.Others {
		olds = append(olds, t)
	}
	for _, t := range olds {
		if t.KMS != config.BackendVaultKV {
			continue
		}
		store, err := c.m.kms.Store()
		if err == nil {
			err = store.Destroy(ctx, t.Key)
		}
		if err != nil {
			c.m.log.Warn("old vault-kv secret not destroyed", "volume", c.v.UUID(), "id", t.Key, "error", err.Error())
		}
	}
}

// finishInterrupted completes or undoes a platform change that an earlier
// process did not finish. It returns "completed", "rolled back" or "" when
// there was nothing to do.
func (c *change) finishInterrupted(ctx context.Context) (string, error) {
	if hold := reencryptHold(c.v); hold != nil {
		// A policy volume's re-encryption holds two platform tokens (the
		// old and the new policy's) until it ends: that is no change to
		// finish here, and no keyslot may go before the re-encryption
		// ends.
		return "", hold
	}
	j, err := c.m.readJournal(c.v.UUID())
	if err != nil {
		return "", err
	}
	v := c.v
	if len(v.Others) == 0 {
		if j != nil {
			// One platform token: the change either never reached the
			// device or its platform part was completed; only recovery
			// keyslots may remain, kept or removed as the journal says.
			if j.Recovery {
				done := j.NewKeyslot >= 0 && v.Managed() && v.Platform.Keyslot == j.NewKeyslot
				if err := c.settleRecovery(ctx, j, done); err != nil {
					return "", err
				}
			}
			return "", c.m.clearJournal(v.UUID())
		}
		return "", nil
	}
	// Two or more platform tokens: the journal's new one, or else the
	// newest, is the candidate.
	var newTok *token.Token
	if j != nil {
		newTok = v.Others[j.NewToken]
	}
	if newTok == nil {
		for _, t := range v.Others {
			if newTok == nil || t.Created.After(newTok.Created) {
				newTok = t
			}
		}
	}
	verr := c.verify(ctx, newTok, nil)
	var old []int
	result := "completed"
	if verr == nil {
		old = append(old, v.Platform.Slots()...)
		for _, t := range v.Others {
			if t != newTok {
				old = append(old, t.Slots()...)
			}
		}
	} else {
		// The new one does not open; keep it unless an old one does.
		if err := c.verify(ctx, v.Platform, nil); err != nil {
			return "", fmt.Errorf("an interrupted %s left two platform keyslots and neither opens through the KMS (new: %w; old: %w); nothing was changed", opName(j), verr, err)
		}
		old, result = newTok.Slots(), "rolled back"
	}
	if err := c.remove(ctx, old, nil); err != nil {
		return "", err
	}
	if j != nil && j.Recovery {
		if err := c.settleRecovery(ctx, j, result == "completed"); err != nil {
			return "", err
		}
	}
	if err := c.m.clearJournal(c.v.UUID()); err != nil {
		return "", err
	}
	c.refreshBackup(ctx)
	c.m.audit(ctx, "resume-"+opName(j), c.v.UUID(), c.v.Name, c.v.Device, nil, slog.String("outcome", result))
	return result, nil
}

// settleRecovery keeps the new recovery keyslots of change j, or the old
// ones. The new ones stay when the platform part of the change is
// complete (platformDone), the new recovery key was verified (mode none
// has none to verify) and it is safe: escrowed, or in mode print shown.
// Else the new ones go and the token records the old arrangement again.
// Either way a volume never loses its last recovery key: when the old
// keyslots are gone already, the new ones stay.
func (c *change) settleRecovery(ctx context.Context, j *journal, platformDone bool) error {
	var older, newer []int
	for _, s := range c.v.Recovery {
		if slices.Contains(j.OldRecovery, s) {
			older = append(older, s)
		} else {
			newer = append(newer, s)
		}
	}
	keepNew := platformDone && (j.Verified || j.RecoveryMode == config.RecoveryNone) &&
		(j.RecoveryMode != config.RecoveryPrint || j.Shown)
	switch {
	case keepNew && len(older) > 0 && (len(newer) > 0 || j.RecoveryMode == config.RecoveryNone):
		// Mode none has no new keyslot: the old ones go all the same.
		return c.remove(ctx, older, nil)
	case !keepNew && (len(older) > 0 || len(j.OldRecovery) == 0):
		return c.remove(ctx, newer, &j.OldRecord)
	case !keepNew:
		c.m.log.Warn("the old recovery keyslots are gone; keeping the new recovery key, which may never have been shown",
			"volume", c.v.UUID(), "keyslots", fmt.Sprint(newer))
	}
	return nil
}

func opName(j *journal) string {
	if j == nil {
		return "change"
	}
	return j.Op
}
