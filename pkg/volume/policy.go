package volume

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/policy"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// PolicyError is an unlock policy that the factors that answered do not
// satisfy. Missing names each factor that failed, with its error; it
// unwraps to those errors, so ErrUnavailable and the rest still classify
// it.
type PolicyError struct {
	Expr    string
	Missing map[string]error
}

func (e *PolicyError) Error() string {
	var parts []string
	for _, f := range e.factors() {
		parts = append(parts, fmt.Sprintf("%s (%v)", f, e.Missing[f]))
	}
	return fmt.Sprintf("policy %s is not satisfied: missing %s", e.Expr, strings.Join(parts, ", "))
}

// Unwrap returns every factor's error.
func (e *PolicyError) Unwrap() []error {
	var out []error
	for _, f := range e.factors() {
		out = append(out, e.Missing[f])
	}
	return out
}

func (e *PolicyError) factors() []string {
	out := make([]string, 0, len(e.Missing))
	for f := range e.Missing {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

// protectPolicy makes fresh key material for policy p: a new secret per
// branch, wrapped by its one factor or split into shares, one wrapped by
// each factor. It returns the branch secrets concatenated in branch order
// (branchSecret takes one out) and the token; nothing is written to the
// device. The caller wipes the secrets.
func (m *Manager) protectPolicy(ctx context.Context, uuid string, tok *token.Token, p *policy.Policy) (*secret.Key, *token.Token, error) {
	branches := p.Branches()
	all, err := secret.New(policy.SecretSize * len(branches))
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*secret.Key, *token.Token, error) {
		all.Wipe()
		return nil, nil, err
	}
	tp := &token.Policy{Expr: p.String()}
	for i, b := range branches {
		sec, err := policy.NewSecret()
		if err != nil {
			return fail(err)
		}
		copy(all.Bytes()[i*policy.SecretSize:], sec.Bytes())
		shares := []*secret.Key{sec}
		if len(b.Factors) > 1 {
			shares, err = policy.Split(sec, b.K, len(b.Factors))
			sec.Wipe()
			if err != nil {
				return fail(err)
			}
		}
		tb := token.Branch{K: b.K}
		for j, f := range b.Factors {
			sh := token.Share{Factor: f}
			if len(shares) > 1 {
				sh.Digest = policy.Digest(uuid, j, shares[j])
			}
			if err == nil {
				var kek kms.KEK
				if kek, err = m.kms.Factor(f); err == nil {
					var w kms.Wrapped
					if w, err = kms.Wrap(ctx, kek, uuid, shares[j]); err == nil {
						sh.KMS, sh.Key, sh.KeyVersion, sh.Ciphertext = w.Backend, w.Key, w.KeyVersion, w.Ciphertext
					} else {
						err = fmt.Errorf("policy factor %s: %w", f, err)
					}
				}
			}
			tb.Shares = append(tb.Shares, sh)
		}
		wipeAll(shares)
		if err != nil {
			return fail(err)
		}
		tp.Branches = append(tp.Branches, tb)
	}
	tok.KMS, tok.Key, tok.Policy = token.KMSPolicy, tp.Expr, tp
	return all, tok, nil
}

// branchSecret copies branch i's secret out of what protectPolicy
// returned. The caller wipes it.
func branchSecret(all *secret.Key, i int) (*secret.Key, error) {
	k, err := secret.New(policy.SecretSize)
	if err != nil {
		return nil, err
	}
	copy(k.Bytes(), all.Bytes()[i*policy.SecretSize:])
	return k, nil
}

// unlocked is what the KMS factors gave for one token: the secret of the
// keyslot slot and the factors that rebuilt it, or why none did.
type unlocked struct {
	ps   *secret.Key
	slot int
	by   []string
	err  error
}

// asPolicy views a token as a policy: a plain token is one branch of one
// share (the wrapped secret), under the factor its backend names.
func asPolicy(t *token.Token) *token.Policy {
	if t.Policy != nil {
		return t.Policy
	}
	return &token.Policy{Expr: t.KMS, Branches: []token.Branch{{Keyslot: t.Keyslot, K: 1, Shares: []token.Share{
		{Factor: t.KMS, KMS: t.KMS, Key: t.Key, KeyVersion: t.KeyVersion, Ciphertext: t.Ciphertext}}}}}
}

// shareRef locates one share: item, branch, share index.
type shareRef struct{ item, branch, share int }

// batchDone is one KEK's answer to its whole batch.
type batchDone struct {
	refs []shareRef
	res  []kms.UnwrapResult
	err  error
}

// unlockPolicies recovers one keyslot secret per token (tokens of the
// volumes uuids): every share of every token is asked of its factor at
// once, one batch per KEK for all the volumes, the KEKs in parallel. A
// token is settled as soon as one of its branches has K good shares (the
// first sufficient set wins), or when no branch can get them any more;
// once every token is settled the batches still running are cancelled,
// so a factor that is down or slow costs nothing when others suffice.
// The caller wipes every returned secret.
func (m *Manager) unlockPolicies(ctx context.Context, uuids []string, toks []*token.Token) []unlocked {
	out := make([]unlocked, len(toks))
	pols := make([]*token.Policy, len(toks))
	// have[item][branch] holds the good shares, failed the factors that
	// could not give theirs.
	have := make([][]map[int]*secret.Key, len(toks))
	failed := make([][]map[int]error, len(toks))
	settled := make([]bool, len(toks))
	groups := map[kms.KEK][]shareRef{}
	defer func() {
		for _, hb := range have {
			for _, h := range hb {
				for _, k := range h {
					k.Wipe()
				}
			}
		}
	}()
	fail := func(r shareRef, err error) {
		failed[r.item][r.branch][r.share] = err
	}
	for i, t := range toks {
		pols[i] = asPolicy(t)
		for b, br := range pols[i].Branches {
			have[i] = append(have[i], map[int]*secret.Key{})
			failed[i] = append(failed[i], map[int]error{})
			for s, sh := range br.Shares {
				r := shareRef{i, b, s}
				kek, err := m.kms.For(kms.Wrapped{Backend: sh.KMS, Key: sh.Key})
				if err != nil {
					fail(r, err)
					continue
				}
				groups[kek] = append(groups[kek], r)
			}
		}
	}
	// settle decides item i if it can; it reports whether it did.
	settle := func(i int) bool {
		if settled[i] {
			return true
		}
		p := pols[i]
		open := false
		for b, br := range p.Branches {
			if len(have[i][b]) >= br.K {
				out[i] = m.rebuild(uuids[i], br, have[i][b])
				settled[i] = true
				return true
			}
			if len(br.Shares)-len(failed[i][b]) >= br.K {
				open = true
			}
		}
		if open {
			return false
		}
		missing := map[string]error{}
		for b, br := range p.Branches {
			for s, err := range failed[i][b] {
				missing[br.Shares[s].Factor] = err
			}
		}
		out[i].err = &PolicyError{Expr: p.Expr, Missing: missing}
		if toks[i].Policy == nil {
			// A plain token: its one error as before.
			for _, err := range missing {
				out[i].err = err
			}
		}
		settled[i] = true
		return true
	}
	remaining := 0
	for i := range toks {
		if !settle(i) {
			remaining++
		}
	}
	if remaining == 0 {
		return out
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan batchDone, len(groups))
	for kek, refs := range groups {
		reqs := make([]kms.UnwrapRequest, len(refs))
		for j, r := range refs {
			sh := pols[r.item].Branches[r.branch].Shares[r.share]
			reqs[j] = kms.UnwrapRequest{Context: uuids[r.item], Wrapped: kms.Wrapped{Backend: sh.KMS, Key: sh.Key, KeyVersion: sh.KeyVersion, Ciphertext: sh.Ciphertext}}
		}
		go func() {
			res, err := kek.Unwrap(cctx, reqs)
			if err == nil && len(res) != len(reqs) {
				wipeResults(res)
				res, err = nil, fmt.Errorf("%s: unwrap returned %d results for %d requests", kek.Backend(), len(res), len(reqs))
			}
			done <- batchDone{refs: refs, res: res, err: err}
		}()
	}
	pending := len(groups)
	for ; pending > 0 && remaining > 0; pending-- {
		d := <-done
		touched := map[int]bool{}
		for j, r := range d.refs {
			touched[r.item] = true
			if settled[r.item] {
				if d.err == nil {
					d.res[j].Plaintext.Wipe()
				}
				continue
			}
			switch {
			case d.err != nil:
				fail(r, d.err)
			case d.res[j].Err != nil:
				fail(r, d.res[j].Err)
			default:
				m.accept(uuids[r.item], pols[r.item], r, d.res[j].Plaintext, have, fail)
			}
		}
		for i := range touched {
			if !settled[i] && settle(i) {
				remaining--
			}
		}
	}
	cancel()
	// Batches still running answer a cancelled context; whatever they
	// did unwrap is wiped.
	go func(n int) {
		for ; n > 0; n-- {
			if d := <-done; d.err == nil {
				wipeResults(d.res)
			}
		}
	}(pending)
	return out
}

// accept keeps an unwrapped share when its digest (split secrets only)
// says it is the share this token wrapped.
func (m *Manager) accept(uuid string, p *token.Policy, r shareRef, k *secret.Key, have [][]map[int]*secret.Key, fail func(shareRef, error)) {
	br := p.Branches[r.branch]
	if len(br.Shares) > 1 {
		if err := policy.CheckDigest(uuid, r.share, k, br.Shares[r.share].Digest); err != nil {
			k.Wipe()
			fail(r, fmt.Errorf("%w (from %s)", err, br.Shares[r.share].Factor))
			return
		}
	}
	have[r.item][r.branch][r.share] = k
}

// rebuild turns K good shares of branch br into its keyslot secret.
func (m *Manager) rebuild(uuid string, br token.Branch, shares map[int]*secret.Key) unlocked {
	u := unlocked{slot: br.Keyslot}
	for s := range shares {
		u.by = append(u.by, br.Shares[s].Factor)
	}
	slices.Sort(u.by)
	if len(br.Shares) == 1 {
		u.ps, u.err = shares[0].Clone()
		return u
	}
	u.ps, u.err = policy.Combine(br.K, shares)
	return u
}

func wipeResults(res []kms.UnwrapResult) {
	for _, r := range res {
		r.Plaintext.Wipe()
	}
}

// perBranch splits a policy token into one token per branch whose shares
// must all answer (K = number of shares), so a verification proves every
// share and every keyslot; a plain token is returned as it is.
func perBranch(t *token.Token) []*token.Token {
	if t.Policy == nil {
		return []*token.Token{t}
	}
	var out []*token.Token
	for _, b := range t.Policy.Branches {
		one := *t
		b.K = len(b.Shares)
		one.Keyslot = b.Keyslot
		one.Policy = &token.Policy{Expr: t.Policy.Expr, Branches: []token.Branch{b}}
		out = append(out, &one)
	}
	return out
}

// shareWrapped is what a policy share says about its ciphertext, in the
// KMS's terms.
func shareWrapped(s token.Share) kms.Wrapped {
	return kms.Wrapped{Backend: s.KMS, Key: s.Key, KeyVersion: s.KeyVersion, Ciphertext: s.Ciphertext}
}

// wrappedOf lists every ciphertext of a token: its own, or each share of
// a policy token (none for vault-kv, which wraps nothing).
func wrappedOf(t *token.Token) []kms.Wrapped {
	if t.Policy == nil {
		return []kms.Wrapped{wrapped(t)}
	}
	var out []kms.Wrapped
	for _, b := range t.Policy.Branches {
		for _, s := range b.Shares {
			out = append(out, shareWrapped(s))
		}
	}
	return out
}
