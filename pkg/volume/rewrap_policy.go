package volume

import (
	"context"
	"fmt"
	"slices"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/token"
)

// shareAt locates one share of a policy token: branch, share.
type shareAt struct{ branch, share int }

// policyRewrap is the share part of Rewrap for the policy volumes of
// vols: every share whose KEK has a newer version (all with force) in one
// KMS rewrap batch per KEK, for all the volumes; each volume's token is
// then replaced once, after every branch opened through its new shares.
func (m *Manager) policyRewrap(ctx context.Context, vols []*Volume, res []RewrapResult, infos map[[2]string]kekInfo, force bool) {
	var reqs []kms.UnwrapRequest
	var vol []int
	var at []shareAt
	for i, v := range vols {
		if !v.Managed() || v.Platform.Policy == nil {
			continue
		}
		r := &res[i]
		p := v.Platform.Policy
		r.KMS, r.Key, r.From = token.KMSPolicy, p.Expr, minVersion(v.Platform)
		r.To, r.Skipped = r.From, true
		for b, br := range p.Branches {
			for s, sh := range br.Shares {
				ki := infos[[2]string{sh.KMS, sh.Key}]
				if ki.err != nil {
					r.Err = fmt.Errorf("policy factor %s: %w", sh.Factor, ki.err)
					continue
				}
				if force || ki.info.Stale(shareWrapped(sh)) {
					reqs = append(reqs, kms.UnwrapRequest{Context: v.UUID(), Wrapped: shareWrapped(sh)})
					vol, at = append(vol, i), append(at, shareAt{b, s})
				}
			}
		}
	}
	if len(reqs) == 0 {
		return
	}
	out := observed(m, "rewrap", func() []kms.WrapResult { return m.kms.Rewrap(ctx, reqs) },
		func(r kms.WrapResult) error { return r.Err })
	next := map[int]*token.Token{}
	for j, w := range out {
		i := vol[j]
		if res[i].Err != nil {
			continue
		}
		if w.Err != nil {
			res[i].Err = w.Err
			continue
		}
		t := next[i]
		if t == nil {
			t = clonePolicyToken(vols[i].Platform)
			t.Rotated = m.now().UTC()
			next[i] = t
		}
		sh := &t.Policy.Branches[at[j].branch].Shares[at[j].share]
		sh.KMS, sh.Key, sh.KeyVersion, sh.Ciphertext = w.Wrapped.Backend, w.Wrapped.Key, w.Wrapped.KeyVersion, w.Wrapped.Ciphertext
	}
	// One unwrap batch for every branch of every new token: each
	// volume's check then opens its keyslots with these answers.
	var uuids []string
	var toks []*token.Token
	for i, t := range next {
		if res[i].Err == nil {
			for _, bt := range perBranch(t) {
				uuids, toks = append(uuids, vols[i].UUID()), append(toks, bt)
			}
		}
	}
	a := m.unwrapEach(ctx, uuids, toks)
	defer a.wipe()
	for i, t := range next {
		if res[i].Err != nil {
			continue
		}
		res[i].Skipped = false
		res[i].Warnings, res[i].Err = m.replaceWith(ctx, vols[i], t, a)
		if res[i].Err == nil {
			res[i].To = minVersion(t)
		}
		m.audit(ctx, "rewrap", vols[i].UUID(), vols[i].Name, vols[i].Device, res[i].Err)
	}
}

// minVersion is the oldest KEK version among a token's ciphertexts.
func minVersion(t *token.Token) int {
	v := 0
	for i, w := range wrappedOf(t) {
		if i == 0 || w.KeyVersion < v {
			v = w.KeyVersion
		}
	}
	return v
}

func clonePolicyToken(t *token.Token) *token.Token {
	c := *t
	p := *t.Policy
	p.Branches = slices.Clone(p.Branches)
	for i := range p.Branches {
		p.Branches[i].Shares = slices.Clone(p.Branches[i].Shares)
	}
	c.Policy = &p
	return &c
}

// sameCiphertexts reports whether a and b carry the same wrapped secrets:
// nobody changed the token since it was read.
func sameCiphertexts(a, b *token.Token) bool {
	return a != nil && b != nil && slices.Equal(wrappedOf(a), wrappedOf(b))
}
