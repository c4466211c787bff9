package volume

import (
	"context"
	"strings"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// RekeyEach rekeys each of vols in turn, exactly as Rekey does one (the
// same commits, journal, verification and recovery-key order, one volume
// finished before the next begins), and calls done with each volume's
// outcome in the order of vols. The KMS is asked in batches first, not
// three times per volume: one wrap batch for the new platform secrets of
// all the volumes, then one unwrap batch for all their current tokens and
// all the new ciphertexts. Each volume's change then takes its answers
// from the batches: the current secret to open its volume key, the new
// secret and token to enrol, and, after the new keyslot is committed, what
// the KMS unwrapped the new token's ciphertext to, which must open that
// keyslot to the volume key (the same proof Rekey makes with its own
// unwrap). Whatever the batches could not answer (a failed item, a token
// that changed since vols were read, an interrupted change's other token,
// a policy or a vault-kv secret) the volume's change asks the KMS itself,
// so each volume fails or succeeds as it would alone.
func (m *Manager) RekeyEach(ctx context.Context, vols []*Volume, o RekeyOptions, done func(v *Volume, res *RekeyResult, err error)) {
	a := m.askAhead(ctx, vols)
	defer a.wipe()
	for _, v := range vols {
		res, err := m.rekey(ctx, v, o, a)
		done(v, res, err)
	}
}

// askAhead makes a new platform secret for each managed volume of vols
// that the configuration gives no policy and wraps them in one batch, then
// unwraps the volumes' current platform tokens and the new ciphertexts in
// one batch. A batch that fails as a whole leaves its answers out.
func (m *Manager) askAhead(ctx context.Context, vols []*Volume) *answers {
	a := newAnswers()
	var uuids []string
	var toks []*token.Token
	for _, v := range vols {
		if v.Managed() && askable(v.Platform) {
			uuids, toks = append(uuids, v.UUID()), append(toks, v.Platform)
		}
	}
	if kek, err := m.kms.Wrapper(); err == nil && kek != nil {
		var reqs []kms.WrapRequest
		var who []*Volume
		seen := map[string]bool{}
		for _, v := range vols {
			if !v.Managed() || m.cfg.PolicyFor(v.Name) != nil || seen[strings.ToLower(v.UUID())] {
				continue
			}
			seen[strings.ToLower(v.UUID())] = true
			ps, err := secret.Random(PlatformSecretSize)
			if err != nil {
				break
			}
			reqs, who = append(reqs, kms.WrapRequest{Context: v.UUID(), Plaintext: ps}), append(who, v)
		}
		var res []kms.WrapResult
		if len(reqs) > 0 {
			res, err = kek.Wrap(ctx, reqs)
		}
		now := m.now().UTC()
		for i, r := range reqs {
			if err != nil || len(res) != len(reqs) || res[i].Err != nil {
				r.Plaintext.Wipe()
				continue
			}
			w := res[i].Wrapped
			tok := &token.Token{Name: who[i].Name, Created: now, Rotated: now, KMS: w.Backend, Key: w.Key, KeyVersion: w.KeyVersion, Ciphertext: w.Ciphertext}
			a.fresh[strings.ToLower(who[i].UUID())] = freshSecret{ps: r.Plaintext, tok: tok}
			uuids, toks = append(uuids, who[i].UUID()), append(toks, tok)
		}
	}
	if len(toks) > 0 {
		a.unwrapped = m.unwrapEach(ctx, uuids, toks).unwrapped
	}
	return a
}
