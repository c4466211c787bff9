package volume

import (
	"context"
	"fmt"
	"strconv"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/policy"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// PlatformSecretSize is the platform secret's length: 256 bits.
const PlatformSecretSize = 32

// protect makes a fresh platform secret for volume uuid and has the
// configured KMS protect it: wrapped by the KEK (the token carries the
// ciphertext), or in vault-kv mode stored in KV under a new id (the token
// carries the id). Nothing is written to the device. The caller wipes the
// secret.
func (m *Manager) protect(ctx context.Context, uuid, name string) (*secret.Key, *token.Token, error) {
	return m.protectUnder(ctx, uuid, name, m.cfg.PolicyFor(name))
}

// protectUnder is protect under policy p instead of the configuration's
// (nil: the kms: backend alone).
func (m *Manager) protectUnder(ctx context.Context, uuid, name string, p *policy.Policy) (*secret.Key, *token.Token, error) {
	if p != nil {
		now := m.now().UTC()
		return m.protectPolicy(ctx, uuid, &token.Token{Name: name, Created: now, Rotated: now}, p)
	}
	ps, err := secret.Random(PlatformSecretSize)
	if err != nil {
		return nil, nil, err
	}
	tok, err := m.protectSecret(ctx, uuid, name, ps)
	if err != nil {
		ps.Wipe()
		return nil, nil, err
	}
	return ps, tok, nil
}

// protectSecret has the kms: backend protect ps, a platform secret made
// by the caller (format seals its keyslot while the KMS answers), for the
// volume uuid named name, and returns its token. The caller wipes ps.
func (m *Manager) protectSecret(ctx context.Context, uuid, name string, ps *secret.Key) (*token.Token, error) {
	now := m.now().UTC()
	tok := &token.Token{Name: name, Created: now, Rotated: now}
	kek, err := m.kms.Wrapper()
	if err != nil {
		return nil, err
	}
	if kek != nil {
		w, err := kms.Wrap(ctx, kek, uuid, ps)
		if err != nil {
			return nil, err
		}
		tok.KMS, tok.Key, tok.KeyVersion, tok.Ciphertext = w.Backend, w.Key, w.KeyVersion, w.Ciphertext
		return tok, nil
	}
	store, err := m.kms.Store()
	if err != nil {
		return nil, err
	}
	// KV secrets are create-only: each platform secret gets its own id,
	// so a rekey never overwrites the secret the old keyslot still needs.
	id := uuid + "." + strconv.FormatInt(now.UnixNano(), 36)
	if err := store.Put(ctx, id, ps); err != nil {
		return nil, err
	}
	tok.KMS, tok.Key = config.BackendVaultKV, id
	return tok, nil
}

// wrapped is what a token says about its secret, in the KMS's terms.
func wrapped(t *token.Token) kms.Wrapped {
	return kms.Wrapped{Backend: t.KMS, Key: t.Key, KeyVersion: t.KeyVersion, Ciphertext: t.Ciphertext}
}

// unwrapAll recovers a keyslot secret for each of toks (tokens of the
// volumes with the given UUIDs) with one KMS round trip per KEK, every
// factor of a policy asked at once (unlockPolicies); vault-kv secrets are
// fetched one by one. The caller wipes every returned secret.
func (m *Manager) unwrapAll(ctx context.Context, uuids []string, toks []*token.Token) []unlocked {
	out := make([]unlocked, len(toks))
	var sub []*token.Token
	var subUUIDs []string
	var idx []int
	for i, t := range toks {
		if t.KMS == config.BackendVaultKV {
			store, err := m.kms.Store()
			if err == nil {
				out[i].ps, err = store.Get(ctx, t.Key)
			}
			out[i].slot, out[i].by, out[i].err = t.Keyslot, []string{t.KMS}, err
			continue
		}
		sub, subUUIDs, idx = append(sub, t), append(subUUIDs, uuids[i]), append(idx, i)
	}
	if len(sub) > 0 {
		res := observed(m, "unwrap", func() []unlocked { return m.unlockPolicies(ctx, subUUIDs, sub) },
			func(r unlocked) error { return r.err })
		for j, r := range res {
			out[idx[j]] = r
		}
	}
	return out
}

// platformKeyslot describes a platform keyslot: PBKDF2 at its minimum,
// for a secret of full entropy, in the lowest free keyslot.
func platformKeyslot() luks2.KeyslotOptions {
	return luks2.KeyslotOptions{Slot: luks2.AnySlot, KDF: kdf.Platform(), Priority: luks2.PriorityNormal}
}

// addPlatform adds a platform keyslot for ps and its token to u and
// returns the keyslot and token numbers. A policy token gets one keyslot
// per branch, ps holding their secrets (protectPolicy); slot is the
// first. sealed, when not nil, is the keyslot of a token without a policy,
// sealed ahead for vk and ps.
func addPlatform(u *luks2.Update, vk, ps *secret.Key, tok *token.Token, sealed *luks2.SealedKeyslot) (slot, id int, err error) {
	opts := platformKeyslot()
	if tok.Policy != nil {
		for i := range tok.Policy.Branches {
			bs, err := branchSecret(ps, i)
			if err != nil {
				return 0, 0, err
			}
			s, err := u.AddKeyslot(vk, bs, opts)
			bs.Wipe()
			if err != nil {
				return 0, 0, fmt.Errorf("add policy keyslot: %w", err)
			}
			tok.Policy.Branches[i].Keyslot = s
		}
		slot = tok.Policy.Branches[0].Keyslot
	} else {
		if sealed != nil {
			slot, err = u.AddSealed(vk, sealed, opts)
		} else {
			slot, err = u.AddKeyslot(vk, ps, opts)
		}
		if err != nil {
			return 0, 0, fmt.Errorf("add platform keyslot: %w", err)
		}
	}
	tok.Keyslot = slot
	data, err := tok.Marshal()
	if err != nil {
		return 0, 0, err
	}
	id, err = u.SetToken(luks2.AnyToken, data)
	if err != nil {
		return 0, 0, fmt.Errorf("add atrest token: %w", err)
	}
	return slot, id, nil
}

// platformKey opens the volume key through the platform keyslot: unwrap
// the token's secret with the KMS, open its keyslot. When a rekey was
// interrupted, the other atrest tokens are tried too. The caller wipes
// the key.
func (m *Manager) platformKey(ctx context.Context, v *Volume, dev luks2.Reader) (*secret.Key, error) {
	vk, _, err := m.platformKeyBy(ctx, v, dev)
	return vk, err
}

// platformKeyBy is platformKey that also names the factors that gave the
// key.
func (m *Manager) platformKeyBy(ctx context.Context, v *Volume, dev luks2.Reader) (*secret.Key, []string, error) {
	return m.platformKeyFrom(ctx, nil, v, dev)
}

// platformKeyFrom is platformKeyBy with the KMS's answers a, given ahead
// (RekeyEach), taken first.
func (m *Manager) platformKeyFrom(ctx context.Context, a *answers, v *Volume, dev luks2.Reader) (*secret.Key, []string, error) {
	if !v.Managed() {
		return nil, nil, fmt.Errorf("%s: %w", v.Device, ErrNotManaged)
	}
	toks := []*token.Token{v.Platform}
	for _, t := range v.Others {
		toks = append(toks, t)
	}
	uuids := make([]string, len(toks))
	for i := range uuids {
		uuids[i] = v.UUID()
	}
	res := m.unwrap(ctx, a, uuids, toks)
	defer wipeUnlocked(res)
	var first error
	for _, r := range res {
		if r.err != nil {
			if first == nil {
				first = r.err
			}
			continue
		}
		vk, err := v.Header.OpenKeyslot(dev, r.slot, r.ps)
		if err == nil {
			return vk, r.by, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, nil, first
}

func wipeAll(keys []*secret.Key) {
	for _, k := range keys {
		k.Wipe()
	}
}

func wipeUnlocked(res []unlocked) {
	for _, r := range res {
		r.ps.Wipe()
	}
}
