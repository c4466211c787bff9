package volume

import (
	"context"
	"fmt"

	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/policy"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// A volume under an unlock policy is re-encrypted with its policy made
// again for the new volume key, the way policy set makes a policy
// (protectUnder, addPlatform through newKeys, verifyToken): a fresh
// secret per branch, fresh shares each wrapped by its factor. The new
// keyslots and the new policy token are written in the commit that starts
// the re-encryption, bound to the new key's digest; the old policy token
// stays bound to the old keyslots, so the old policy gives the old key
// and the new policy the new one while the re-encryption is under way,
// and the old keyslots and their token go when it ends.

// reencPolicy is the new key material of a policy volume's re-encryption.
type reencPolicy struct {
	// ps holds the branch secrets (protectPolicy), tok the new token.
	ps  *secret.Key
	tok *token.Token
}

func (p *reencPolicy) wipe() {
	if p != nil {
		p.ps.Wipe()
	}
}

// newPolicyKeys makes the volume's policy again: every factor of every
// branch wraps its new share, and before anything is written each share
// is unwrapped again and rebuilds its branch's secret (a factor that
// wraps but does not unwrap is found here, not after the start). A factor
// that does not answer fails the call, named, with nothing written.
func (c *change) newPolicyKeys(ctx context.Context) (*reencPolicy, error) {
	p, err := policy.ParseCanonical(c.v.Platform.Policy.Expr)
	if err != nil {
		return nil, err
	}
	ps, tok, err := c.m.protectUnder(ctx, c.v.UUID(), c.v.Name, p)
	if err != nil {
		return nil, fmt.Errorf("the new key material of policy %s: %w; nothing was changed", p, err)
	}
	rp := &reencPolicy{ps: ps, tok: tok}
	if err := c.m.unwrapsBack(ctx, c.v.UUID(), tok, ps); err != nil {
		rp.wipe()
		return nil, fmt.Errorf("the new key material of policy %s: %w; nothing was changed", p, err)
	}
	return rp, nil
}

// unwrapsBack checks that every branch of tok (made by protectPolicy,
// whose branch secrets all holds) is rebuilt through all of its shares,
// each unwrapped by its factor, to the secret it was made from.
func (m *Manager) unwrapsBack(ctx context.Context, uuid string, tok *token.Token, all *secret.Key) error {
	toks := perBranch(tok)
	uuids := make([]string, len(toks))
	for i := range uuids {
		uuids[i] = uuid
	}
	res := m.unwrapAll(ctx, uuids, toks)
	defer wipeUnlocked(res)
	for i, r := range res {
		if r.err != nil {
			return r.err
		}
		want, err := branchSecret(all, i)
		if err != nil {
			return err
		}
		same := want.Equal(r.ps)
		want.Wipe()
		if !same {
			return fmt.Errorf("%w: branch %d unwraps to another secret than it was made from", ErrVerify, i+1)
		}
	}
	return nil
}

// add puts the new policy's keyslots (one per branch, for newVK) and its
// token into u; the token records rec (nil: the old token's record).
func (p *reencPolicy) add(u *luks2.Update, newVK *secret.Key, rec *Recovery, old *token.Token) error {
	p.tok.Recovery = old.Recovery
	if rec != nil {
		p.tok.Recovery = rec.record()
	}
	k := &newKeys{vk: newVK, ps: p.ps, tok: p.tok}
	return k.add(u)
}

// firstSecret is a copy of the first branch's secret: it opens a keyslot
// of the new key. The caller wipes it.
func (p *reencPolicy) firstSecret() (*secret.Key, error) {
	return branchSecret(p.ps, 0)
}

// proveStart proves, once the header is in re-encryption and before any
// data is touched, the keyslots the start added: every keyslot of the new
// policy opens through all of its shares to newVK (verifyToken, as policy
// set proves its keyslots), the new recovery key gives both keys (as
// cryptsetup needs to resume with it), each re-sealed TPM keyslot is
// unsealed by the TPM and opens to newVK. Nothing is re-encrypted when
// one fails: the error says so.
func (c *change) proveStart(ctx context.Context, pol *reencPolicy, rec *Recovery, tpms []*tpmSlot, newVK *secret.Key) error {
	fail := func(what string, err error) error {
		return &StageError{Op: c.op, Device: c.v.Device, Err: fmt.Errorf("%w: %s: %w", ErrVerify, what, err),
			State: fmt.Sprintf("the header is in re-encryption, no data is re-encrypted yet; the old key material still gives the old key; once the cause is fixed, atrest reencrypt %s continues", c.v.Ref())}
	}
	h := c.v.Header
	if pol != nil {
		if err := c.verify(ctx, pol.tok, newVK); err != nil {
			return fail("a keyslot of the new policy does not open through its factors", err)
		}
	}
	if rec != nil && rec.Key != nil {
		keys, err := h.OpenReencryptKeys(c.dev, rec.Key)
		if err != nil {
			return fail("the new recovery key", err)
		}
		ok := keys.New.Equal(newVK)
		keys.Wipe()
		if !ok {
			return fail("the new recovery key", luks2.ErrWrongVolumeKey)
		}
	}
	for _, t := range tpms {
		if err := t.verify(h, c.dev, newVK); err != nil {
			return fail(fmt.Sprintf("re-sealed TPM keyslot %d", t.slot), err)
		}
	}
	return nil
}
