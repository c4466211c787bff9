package volume

import (
	"context"
	"fmt"

	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// newKeys is key material a use case adds to a header in one commit: a
// platform keyslot for ps (tok describes it; nil ps: none) and a recovery
// keyslot for rec (nil: none), a TPM keyslot (tpm), all opening to the volume key vk. Format,
// adopt, rekey, reseal and recovery rotate all add, verify and (on a
// failed verification) remove through it, so they do it the same way.
type newKeys struct {
	vk, ps *secret.Key
	tok    *token.Token
	rec    *Recovery
	// tpm is a TPM keyslot with its systemd-tpm2 token (nil: none).
	tpm *tpmSlot
	// slot and id are the platform keyslot and token once added.
	slot, id int
	// record, when set, is the recovery arrangement the platform token
	// records again when the new keyslots are removed (recovery rotate,
	// which changes the token in place).
	record *string
	// known: the KMS's answers given ahead (RekeyEach), nil: none.
	known *answers
	// sealed is the platform keyslot sealed ahead (format), nil: add
	// seals it.
	sealed *luks2.SealedKeyslot
}

// add puts the new keyslots and tokens into u.
func (k *newKeys) add(u *luks2.Update) error {
	if k.ps != nil {
		var err error
		if k.slot, k.id, err = addPlatform(u, k.vk, k.ps, k.tok, k.sealed); err != nil {
			return err
		}
	}
	if k.tpm != nil {
		if err := k.tpm.add(u, k.vk); err != nil {
			return err
		}
	}
	if k.rec != nil {
		return k.rec.enroll(u, k.vk)
	}
	return nil
}

// added lists the keyslots add made: the platform keyslot (one per
// branch of a policy token) and the recovery keyslot.
func (k *newKeys) added() []int {
	var out []int
	if k.ps != nil {
		out = append(out, k.tok.Slots()...)
	}
	if k.rec != nil && k.rec.Keyslot >= 0 {
		out = append(out, k.rec.Keyslot)
	}
	if k.tpm != nil {
		out = append(out, k.tpm.slot)
	}
	return out
}

// verifyKeys proves the new keyslots in h on dev: the platform secret,
// unwrapped through the KMS as the next boot will, opens its keyslot to
// vk, and the recovery key opens its keyslot.
func (m *Manager) verifyKeys(ctx context.Context, h *luks2.Header, dev luks2.Reader, k *newKeys) error {
	// The recovery keyslot, which only needs the CPU, opens beside the
	// others (the platform path may ask the KMS or the TPM); its error
	// comes last, as when it ran last.
	recErr := make(chan error, 1)
	if k.rec != nil {
		go func() { recErr <- k.rec.verify(h, dev) }()
	} else {
		recErr <- nil
	}
	err := m.verifyPlatform(ctx, h, dev, k)
	if rerr := <-recErr; err == nil && rerr != nil {
		err = fmt.Errorf("recovery keyslot %d: %w", k.rec.Keyslot, rerr)
	}
	return err
}

// verifyPlatform is verifyKeys' platform and TPM keyslots.
func (m *Manager) verifyPlatform(ctx context.Context, h *luks2.Header, dev luks2.Reader, k *newKeys) error {
	if k.ps != nil {
		if err := m.verifyTokenFrom(ctx, k.known, h, dev, k.tok, k.vk); err != nil {
			return err
		}
	}
	if k.tpm != nil {
		if err := k.tpm.verify(h, dev, k.vk); err != nil {
			return fmt.Errorf("TPM keyslot %d: %w", k.tpm.slot, err)
		}
	}
	return nil
}

// verifyToken unwraps tok's secret through the KMS and checks that it
// opens tok's keyslot in h to the volume key vk (nil: any key that passes
// the digest).
// A policy token is verified branch by branch, every share of every
// branch: each keyslot must open through its own factors.
func (m *Manager) verifyToken(ctx context.Context, h *luks2.Header, dev luks2.Reader, tok *token.Token, vk *secret.Key) error {
	return m.verifyTokenFrom(ctx, nil, h, dev, tok, vk)
}

// verifyTokenFrom is verifyToken with the KMS's answers a, given ahead
// (RekeyEach), taken first: what the KMS unwrapped tok's ciphertext to
// then, before the keyslot was committed, must open it now.
func (m *Manager) verifyTokenFrom(ctx context.Context, a *answers, h *luks2.Header, dev luks2.Reader, tok *token.Token, vk *secret.Key) error {
	toks := perBranch(tok)
	uuids := make([]string, len(toks))
	for i := range uuids {
		uuids[i] = h.UUID
	}
	res := m.unwrap(ctx, a, uuids, toks)
	defer wipeUnlocked(res)
	for _, r := range res {
		if r.err != nil {
			return r.err
		}
		got, err := openKeyslot(h, dev, r.slot, r.ps)
		if err != nil {
			return fmt.Errorf("keyslot %d: %w", r.slot, err)
		}
		same := vk == nil || got.Equal(vk)
		got.Wipe()
		if !same {
			return luks2.ErrWrongVolumeKey
		}
	}
	return nil
}

// openKeyslot opens keyslot slot of h, also while h is under
// re-encryption (the keyslots a re-encryption's start added are proven
// before its run), to the key of the digest the keyslot is bound to. The
// caller wipes the key.
func openKeyslot(h *luks2.Header, dev luks2.Reader, slot int, pass *secret.Key) (*secret.Key, error) {
	if st, err := h.Reencryption(); st == nil || err != nil {
		return h.OpenKeyslot(dev, slot, pass)
	}
	vk, _, err := h.OpenReencryptKeyslot(dev, slot, pass)
	return vk, err
}

// commitKeys adds k to the volume's header in one commit (with edit, if
// any, changing the same update), passes the failpoint <op>-after-add,
// runs committed (the caller's journal), and verifies the new keyslots. When they do not verify it
// removes them again and clears the journal; the error says truthfully
// whether the removal worked.
func (c *change) commitKeys(ctx context.Context, k *newKeys, edit func(*luks2.Update) error, committed func() error) error {
	u, err := c.v.Header.Begin()
	if err == nil {
		err = k.add(u)
	}
	if err == nil && edit != nil {
		err = edit(u)
	}
	if err != nil {
		_ = c.m.clearJournal(c.v.UUID())
		return err
	}
	if _, err := u.Commit(ctx, c.dev); err != nil {
		return c.afterFailedCommit(ctx, err)
	}
	failpoint(c.op + "-after-add")
	if committed != nil {
		if err := committed(); err != nil {
			return err
		}
	}
	if err := c.reload(ctx); err != nil {
		return err
	}
	verr := c.m.verifyKeys(ctx, c.v.Header, c.dev, k)
	if verr == nil {
		return nil
	}
	added := k.added()
	if err := c.remove(ctx, added, k.record); err != nil {
		return &StageError{Op: c.op, Device: c.v.Device, Err: fmt.Errorf("%w: %w", ErrVerify, verr),
			State: fmt.Sprintf("removing the new keyslots %v failed too (%v): they are still on the device; the volume opens with its old key material, and the next change of the volume sorts them out", added, err)}
	}
	if err := c.m.clearJournal(c.v.UUID()); err != nil {
		return err
	}
	// The header's seqid moved on: back it up again, or status calls the
	// backup stale although the keyslots are as they were.
	if err := c.m.saveBackup(ctx, c.dev, c.v.UUID(), c.v.Header); err != nil {
		return fmt.Errorf("%w: %w (the new keyslots %v were removed; the volume is as it was, but %v)", ErrVerify, verr, added, err)
	}
	return fmt.Errorf("%w: %w (the new keyslots %v were removed; the volume is as it was)", ErrVerify, verr, added)
}
