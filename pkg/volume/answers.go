package volume

import (
	"context"
	"strconv"
	"strings"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// Batches of changes ask the KMS ahead, for every volume at once, what
// each volume's change would ask alone (RekeyEach, the rewraps' checks,
// format's verification while its header is written); each change then
// takes its answers, and asks the KMS itself for whatever they lack.

// answers holds what the KMS said ahead of a batch of changes, each
// answer taken (and from then on the taker's to wipe) at most once.
type answers struct {
	// unwrapped: secrets by answerKey.
	unwrapped map[string]unlocked
	// fresh: new platform secrets and their tokens by volume UUID.
	fresh map[string]freshSecret
}

// newAnswers is an empty set of answers.
func newAnswers() *answers {
	return &answers{unwrapped: map[string]unlocked{}, fresh: map[string]freshSecret{}}
}

type freshSecret struct {
	ps  *secret.Key
	tok *token.Token
}

// answerKey names a token's ciphertexts for volume uuid: a plain token's,
// or every share of a policy's branches with the number each needs (not
// the keyslots: a new token is unwrapped before its keyslot is added).
func answerKey(uuid string, t *token.Token) string {
	parts := []string{strings.ToLower(uuid)}
	if t.Policy == nil {
		return strings.Join(append(parts, t.KMS, t.Key, strconv.Itoa(t.KeyVersion), t.Ciphertext), "\x00")
	}
	for _, b := range t.Policy.Branches {
		parts = append(parts, "branch", strconv.Itoa(b.K))
		for _, sh := range b.Shares {
			parts = append(parts, sh.Factor, sh.KMS, sh.Key, strconv.Itoa(sh.KeyVersion), sh.Ciphertext)
		}
	}
	return strings.Join(parts, "\x00")
}

// askable reports whether t's secret can be unwrapped ahead: a token of
// KEKs, plain or a policy (a vault-kv secret is fetched by id).
func askable(t *token.Token) bool {
	if t == nil {
		return false
	}
	for _, w := range wrappedOf(t) {
		if w.Backend == config.BackendVaultKV {
			return false
		}
	}
	return t.KMS != config.BackendVaultKV
}

// unwrapEach unwraps toks (of the volumes uuids) in one batch and keeps
// what it gave as answers given ahead.
func (m *Manager) unwrapEach(ctx context.Context, uuids []string, toks []*token.Token) *answers {
	a := newAnswers()
	for i, r := range m.unwrapAll(ctx, uuids, toks) {
		k := answerKey(uuids[i], toks[i])
		if _, dup := a.unwrapped[k]; r.err != nil || dup {
			r.ps.Wipe()
			continue
		}
		a.unwrapped[k] = r
	}
	return a
}

// takeFresh returns the new platform secret and token made for volume
// uuid, or nils.
func (a *answers) takeFresh(uuid string) (*secret.Key, *token.Token) {
	if a == nil {
		return nil, nil
	}
	f, ok := a.fresh[strings.ToLower(uuid)]
	if !ok {
		return nil, nil
	}
	delete(a.fresh, strings.ToLower(uuid))
	return f.ps, f.tok
}

// unwrap is unwrapAll with the answers given ahead taken first: the KMS
// is asked only for the tokens they do not answer.
func (m *Manager) unwrap(ctx context.Context, a *answers, uuids []string, toks []*token.Token) []unlocked {
	if a == nil {
		return m.unwrapAll(ctx, uuids, toks)
	}
	out := make([]unlocked, len(toks))
	var askUUIDs []string
	var ask []*token.Token
	var idx []int
	for i, t := range toks {
		if askable(t) {
			k := answerKey(uuids[i], t)
			if r, ok := a.unwrapped[k]; ok {
				delete(a.unwrapped, k)
				// A plain token or a policy's one branch may have been
				// unwrapped before its keyslot was added: the token names
				// it now.
				if t.Policy == nil || len(t.Policy.Branches) == 1 {
					r.slot = t.Keyslot
				}
				out[i] = r
				continue
			}
		}
		askUUIDs, ask, idx = append(askUUIDs, uuids[i]), append(ask, t), append(idx, i)
	}
	if len(ask) > 0 {
		for j, r := range m.unwrapAll(ctx, askUUIDs, ask) {
			out[idx[j]] = r
		}
	}
	return out
}

// wipe wipes every answer nobody took.
func (a *answers) wipe() {
	for _, r := range a.unwrapped {
		r.ps.Wipe()
	}
	for _, f := range a.fresh {
		f.ps.Wipe()
	}
	clear(a.unwrapped)
	clear(a.fresh)
}

// pending is an unwrap running while the caller writes: wait gives its
// answer, wipe (deferred) waits for it and wipes what nobody took.
type pending struct {
	done chan struct{}
	a    *answers
}

// unwrapAhead starts unwrapping tok's ciphertexts for volume uuid, branch
// by branch as verifyToken asks for them (for a token of no KEK there is
// nothing to wait for), so that the KMS's round trip overlaps the header
// write that comes before the keyslots can be checked.
func (m *Manager) unwrapAhead(ctx context.Context, uuid string, tok *token.Token) *pending {
	p := &pending{done: make(chan struct{})}
	if !askable(tok) {
		p.a = newAnswers()
		close(p.done)
		return p
	}
	// Copies: the caller goes on changing its token (recovery, keyslots).
	var uuids []string
	var toks []*token.Token
	c := *tok
	if tok.Policy != nil {
		c = *clonePolicyToken(tok)
	}
	for _, bt := range perBranch(&c) {
		uuids, toks = append(uuids, uuid), append(toks, bt)
	}
	go func() {
		defer close(p.done)
		p.a = m.unwrapEach(ctx, uuids, toks)
	}()
	return p
}

func (p *pending) wait() *answers {
	<-p.done
	return p.a
}

func (p *pending) wipe() { p.wait().wipe() }
