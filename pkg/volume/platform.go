package volume

import (
	"context"
	"fmt"
	"strconv"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/kdf"
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
	ps, err := secret.Random(PlatformSecretSize)
	if err != nil {
		return nil, nil, err
	}
	now := m.now().UTC()
	tok := &token.Token{Name: name, Created: now, Rotated: now}
	kek, err := m.kms.Wrapper()
	if err != nil {
		ps.Wipe()
		return nil, nil, err
	}
	if kek != nil {
		w, err := kms.Wrap(ctx, kek, uuid, ps)
		if err != nil {
			ps.Wipe()
			return nil, nil, err
		}
		tok.KMS, tok.Key, tok.KeyVersion, tok.Ciphertext = w.Backend, w.Key, w.KeyVersion, w.Ciphertext
		return ps, tok, nil
	}
	store, err := m.kms.Store()
	if err != nil {
		ps.Wipe()
		return nil, nil, err
	}
	// KV secrets are create-only: each platform secret gets its own id,
	// so a rekey never overwrites the secret the old keyslot still needs.
	id := uuid + "." + strconv.FormatInt(now.UnixNano(), 36)
	if err := store.Put(ctx, id, ps); err != nil {
		ps.Wipe()
		return nil, nil, err
	}
	tok.KMS, tok.Key = config.BackendVaultKV, id
	return ps, tok, nil
}

// wrapped is what a token says about its secret, in the KMS's terms.
func wrapped(t *token.Token) kms.Wrapped {
	return kms.Wrapped{Backend: t.KMS, Key: t.Key, KeyVersion: t.KeyVersion, Ciphertext: t.Ciphertext}
}

// unwrapAll recovers the platform secrets of toks (tokens of the volumes
// with the given UUIDs) with one KMS round trip per KEK; vault-kv secrets
// are fetched one by one. The caller wipes every returned secret.
func (m *Manager) unwrapAll(ctx context.Context, uuids []string, toks []*token.Token) ([]*secret.Key, []error) {
	keys := make([]*secret.Key, len(toks))
	errs := make([]error, len(toks))
	var reqs []kms.UnwrapRequest
	var idx []int
	for i, t := range toks {
		if t.KMS == config.BackendVaultKV {
			store, err := m.kms.Store()
			if err == nil {
				keys[i], err = store.Get(ctx, t.Key)
			}
			errs[i] = err
			continue
		}
		reqs = append(reqs, kms.UnwrapRequest{Context: uuids[i], Wrapped: wrapped(t)})
		idx = append(idx, i)
	}
	if len(reqs) > 0 {
		res := observed(m, "unwrap", func() []kms.UnwrapResult { return m.kms.Unwrap(ctx, reqs) },
			func(r kms.UnwrapResult) error { return r.Err })
		for j, r := range res {
			keys[idx[j]], errs[idx[j]] = r.Plaintext, r.Err
		}
	}
	return keys, errs
}

// addPlatform adds a platform keyslot for ps and its token to u and
// returns the keyslot and token numbers.
func addPlatform(u *luks2.Update, vk, ps *secret.Key, tok *token.Token) (slot, id int, err error) {
	slot, err = u.AddKeyslot(vk, ps, luks2.KeyslotOptions{Slot: luks2.AnySlot, KDF: kdf.Platform(), Priority: luks2.PriorityNormal})
	if err != nil {
		return 0, 0, fmt.Errorf("add platform keyslot: %w", err)
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
	if !v.Managed() {
		return nil, fmt.Errorf("%s: %w", v.Device, ErrNotManaged)
	}
	toks := []*token.Token{v.Platform}
	for _, t := range v.Others {
		toks = append(toks, t)
	}
	uuids := make([]string, len(toks))
	for i := range uuids {
		uuids[i] = v.UUID()
	}
	keys, errs := m.unwrapAll(ctx, uuids, toks)
	defer wipeAll(keys)
	var first error
	for i, ps := range keys {
		if errs[i] != nil {
			if first == nil {
				first = errs[i]
			}
			continue
		}
		vk, err := v.Header.OpenKeyslot(dev, toks[i].Keyslot, ps)
		if err == nil {
			return vk, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

func wipeAll(keys []*secret.Key) {
	for _, k := range keys {
		k.Wipe()
	}
}
