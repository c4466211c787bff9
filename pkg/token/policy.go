package token

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// KMSPolicy is the kms field of a policy token: its secrets are in
// Policy, one branch per keyslot.
const KMSPolicy = "policy"

// PolicyVersion is the token version of policy tokens. Tokens without a
// policy are still written as version 1, so older builds keep reading
// them.
const PolicyVersion = 2

// Policy is the key material of an unlock policy (docs/policy.md): one
// branch per keyslot; a branch's secret is wrapped by one factor, or split
// into shares of which K rebuild it, each share wrapped by its factor.
type Policy struct {
	// Expr is the policy in canonical form, e.g. "any(vault,local)".
	Expr     string   `json:"expr"`
	Branches []Branch `json:"branches"`
}

// Branch is one keyslot of a policy.
type Branch struct {
	Keyslot int `json:"-"`
	// K shares of Shares rebuild the keyslot's passphrase; with one share
	// and K 1 the share is the passphrase itself.
	K      int     `json:"k"`
	Shares []Share `json:"shares"`
}

// Share is one factor's part of a branch: its wrapped share and, for
// split secrets, a digest that recognises it (policy.Digest). Shamir id
// of Shares[i] is i+1.
type Share struct {
	Factor     string `json:"factor"`
	KMS        string `json:"kms"`
	Key        string `json:"key"`
	KeyVersion int    `json:"key_version"`
	Ciphertext string `json:"ciphertext"`
	Digest     string `json:"digest,omitempty"`
}

type wireBranch struct {
	Keyslot string `json:"keyslot"`
	Branch
}

type wirePolicy struct {
	Expr     string       `json:"expr"`
	Branches []wireBranch `json:"branches"`
}

func (p *Policy) toWire() *wirePolicy {
	if p == nil {
		return nil
	}
	w := &wirePolicy{Expr: p.Expr}
	for _, b := range p.Branches {
		w.Branches = append(w.Branches, wireBranch{Keyslot: strconv.Itoa(b.Keyslot), Branch: b})
	}
	return w
}

func (w *wirePolicy) parse() (*Policy, error) {
	p := &Policy{Expr: w.Expr}
	for i, wb := range w.Branches {
		b := wb.Branch
		s, err := strconv.Atoi(wb.Keyslot)
		if err != nil {
			return nil, fmt.Errorf("policy branch %d: keyslot %q is not a number", i, wb.Keyslot)
		}
		b.Keyslot = s
		p.Branches = append(p.Branches, b)
	}
	return p, nil
}

// Slots lists the keyslots the token is bound to: one, or one per
// policy branch.
func (t *Token) Slots() []int {
	if t.Policy == nil {
		return []int{t.Keyslot}
	}
	out := make([]int, len(t.Policy.Branches))
	for i, b := range t.Policy.Branches {
		out[i] = b.Keyslot
	}
	return out
}

func (p *Policy) check() error {
	if len(p.Branches) == 0 {
		return errors.New("policy without branches")
	}
	var slots []int
	for i, b := range p.Branches {
		switch {
		case b.Keyslot < 0 || b.Keyslot > 31:
			return fmt.Errorf("policy branch %d: keyslot %d out of range", i, b.Keyslot)
		case slices.Contains(slots, b.Keyslot):
			return fmt.Errorf("policy branch %d: keyslot %d is another branch's", i, b.Keyslot)
		case len(b.Shares) == 0 || b.K < 1 || b.K > len(b.Shares):
			return fmt.Errorf("policy branch %d: k %d of %d shares", i, b.K, len(b.Shares))
		}
		slots = append(slots, b.Keyslot)
		for j, s := range b.Shares {
			switch {
			case s.KMS == "" || s.Ciphertext == "":
				return fmt.Errorf("policy branch %d share %d: no kms or ciphertext", i, j)
			case len(b.Shares) > 1 && s.Digest == "":
				return fmt.Errorf("policy branch %d share %d: no digest", i, j)
			}
		}
	}
	return nil
}
