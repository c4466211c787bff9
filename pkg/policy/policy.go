// Package policy owns unlock policies: which KMS factors must answer before
// a volume opens. A policy is any-of, all-of or k-of-n over factors (the
// configured backends local, vault, kmip and tpm), nestable one level: an
// any may hold all and threshold groups of factors, and a group may hold
// any-lists of factors.
//
// A policy compiles to branches (Branches): one per member of a top-level
// any, or one for a top-level all or threshold (a group with any-lists:
// one per choice of a factor from each list). Each branch is
// one LUKS2 keyslot whose passphrase is a fresh secret; a branch of one
// factor wraps that secret with it, a group splits it into one Shamir
// share per factor (shamir.go) of which K rebuild it. docs/policy.md has
// the on-disk format and what each shape protects against.
//
// Recovery keys are never part of a policy: their keyslot opens the volume
// whatever the policy says.
package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Operators of a policy node.
const (
	Any       = "any"
	All       = "all"
	Threshold = "threshold"
)

// Factor names a policy may use. Each names a section of the
// configuration: local (local.keystore), vault (vault-transit with
// vault.transit.key), kmip (kmip.*). TPM is reserved for the TPM2 factor.
const (
	FactorLocal = "local"
	FactorVault = "vault"
	FactorKMIP  = "kmip"
	FactorTPM   = "tpm"
)

// MaxShares bounds the members of one group (the LUKS2 JSON area bounds
// the token size).
const MaxShares = 8

// MaxBranches bounds the keyslots a policy compiles to: LUKS2 has 32, and
// a rekey or policy change holds the old and the new ones at once, next
// to the recovery and TPM keyslots.
const MaxBranches = 8

// Policy is one node: a factor (Factor set), or an operator over Of. K is
// the threshold of a Threshold node (len(Of) for All, 1 for Any).
type Policy struct {
	Op     string
	K      int
	Of     []*Policy
	Factor string
	// Line is where the node starts in the configuration file (0: not
	// from a file).
	Line int
}

// Error is a policy that cannot be used; Line is its line in the file.
type Error struct {
	Line int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func errAt(n *yaml.Node, format string, args ...any) error {
	return &Error{Line: n.Line, Msg: fmt.Sprintf(format, args...)}
}

// UnmarshalYAML reads a policy: a factor name, or a mapping with exactly
// one of any: [..], all: [..], threshold: {k: K, of: [..]}.
func (p *Policy) UnmarshalYAML(n *yaml.Node) error {
	q, err := fromNode(n, 0)
	if err != nil {
		return err
	}
	*p = *q
	return nil
}

func fromNode(n *yaml.Node, depth int) (*Policy, error) {
	if n.Kind == yaml.ScalarNode {
		return &Policy{Factor: n.Value, Line: n.Line}, nil
	}
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		return nil, errAt(n, "a policy is a factor name or one of any: [...], all: [...], threshold: {k: K, of: [...]}")
	}
	key, val := n.Content[0], n.Content[1]
	p := &Policy{Op: key.Value, Line: key.Line}
	if depth > 1 {
		return nil, errAt(key, "%s: policies nest one level only (an any may hold all and threshold groups of factors, a group any-lists of factors)", p.Op)
	}
	list := val
	switch p.Op {
	case Any, All:
	case Threshold:
		if val.Kind != yaml.MappingNode {
			return nil, errAt(val, "threshold wants {k: K, of: [factors]}")
		}
		list = nil
		for i := 0; i+1 < len(val.Content); i += 2 {
			k, v := val.Content[i], val.Content[i+1]
			switch k.Value {
			case "k":
				x, err := strconv.Atoi(v.Value)
				if err != nil || v.Kind != yaml.ScalarNode {
					return nil, errAt(v, "threshold.k: %q is not a number", v.Value)
				}
				p.K = x
			case "of":
				list = v
			default:
				return nil, errAt(k, "threshold: unknown field %q (want k and of)", k.Value)
			}
		}
		if list == nil {
			return nil, errAt(val, "threshold needs of: [factors]")
		}
	default:
		return nil, errAt(key, "unknown policy operator %q (want any, all or threshold)", p.Op)
	}
	if list.Kind != yaml.SequenceNode {
		return nil, errAt(list, "%s wants a list such as [vault, local]", p.Op)
	}
	for _, c := range list.Content {
		q, err := fromNode(c, depth+1)
		if err != nil {
			return nil, err
		}
		p.Of = append(p.Of, q)
	}
	switch p.Op {
	case Any:
		p.K = 1
	case All:
		p.K = len(p.Of)
	}
	return p, nil
}

// Validate checks the shape and that every factor is usable: known
// reports why a factor name cannot be used (nil: it can). Nesting is one
// level: an any may hold all and threshold groups of factors, and a group
// may hold any-lists of factors (alternatives for one member).
func (p *Policy) Validate(known func(factor string) error) error {
	at := func(q *Policy, format string, args ...any) error {
		return &Error{Line: q.Line, Msg: fmt.Sprintf(format, args...)}
	}
	var walk func(q *Policy, parent string, depth int) error
	walk = func(q *Policy, parent string, depth int) error {
		if q.Op == "" {
			if err := known(q.Factor); err != nil {
				return at(q, "factor %q: %v", q.Factor, err)
			}
			return nil
		}
		switch {
		case depth > 1:
			return at(q, "%s: policies nest one level only", q.Op)
		case parent == Any && q.Op == Any:
			return at(q, "any inside any: list the factors in the outer any")
		case parent != "" && parent != Any && q.Op != Any:
			return at(q, "%s inside %s: a group holds factors and any-lists of factors only", q.Op, parent)
		}
		if len(q.Of) == 0 {
			return at(q, "%s: empty list", q.Op)
		}
		if q.Op != Any && len(q.Of) > MaxShares {
			return at(q, "%s: %d factors, at most %d", q.Op, len(q.Of), MaxShares)
		}
		if q.Op == Threshold && (q.K < 1 || q.K > len(q.Of)) {
			return at(q, "threshold: k is %d, want 1 to %d (the number of factors in of)", q.K, len(q.Of))
		}
		for _, c := range q.Of {
			if err := walk(c, q.Op, depth+1); err != nil {
				return err
			}
		}
		if q.Op == Any && parent == "" {
			return nil
		}
		// A group (and an any inside one) names each factor once: a
		// second share under the same factor adds no protection.
		seen := map[string]bool{}
		for _, c := range q.Of {
			for _, f := range leaves(c) {
				if seen[f.Factor] {
					return at(f, "%s: factor %q is listed twice; a second share under the same factor adds no protection", q.Op, f.Factor)
				}
				seen[f.Factor] = true
			}
		}
		return nil
	}
	if err := walk(p, "", 0); err != nil {
		return err
	}
	if n := len(p.Branches()); n > MaxBranches {
		return at(p, "%s compiles to %d keyslots, at most %d (a change of the volume needs the old and the new ones at once)", p.String(), n, MaxBranches)
	}
	return nil
}

// leaves are the factor nodes of q: q itself, or the members of an any.
func leaves(q *Policy) []*Policy {
	if q.Op == "" {
		return []*Policy{q}
	}
	return q.Of
}

// String renders the policy in its canonical form, e.g.
// "any(all(local,vault),kmip)" or "threshold(2;vault,kmip,local)".
func (p *Policy) String() string {
	if p == nil {
		return ""
	}
	if p.Op == "" {
		return p.Factor
	}
	parts := make([]string, len(p.Of))
	for i, c := range p.Of {
		parts[i] = c.String()
	}
	if p.Op == Threshold {
		return fmt.Sprintf("threshold(%d;%s)", p.K, strings.Join(parts, ","))
	}
	return p.Op + "(" + strings.Join(parts, ",") + ")"
}

// Branch is one keyslot of a compiled policy: K of Factors rebuild its
// secret (K 1 with one factor: the factor wraps the secret itself).
type Branch struct {
	K       int
	Factors []string
}

// Branches compiles a validated policy into its keyslots: one per member
// of a top-level any, or one for a top-level group. A group with any-lists
// among its members becomes one branch per choice of one factor from each
// list (all: [any: [tpm, kmip], vault] is all(tpm,vault) or
// all(kmip,vault)): a member counts once whichever of its factors answers,
// so the branches together are satisfied exactly when the group is.
func (p *Policy) Branches() []Branch {
	if p.Op != Any {
		return expand(p)
	}
	var out []Branch
	for _, c := range p.Of {
		out = append(out, expand(c)...)
	}
	return out
}

// expand compiles a factor or a group into its branches.
func expand(q *Policy) []Branch {
	if q.Op == "" {
		return []Branch{{K: 1, Factors: []string{q.Factor}}}
	}
	if q.Op == Any {
		// A top-level any of factors only is its members' branches.
		var out []Branch
		for _, c := range q.Of {
			out = append(out, expand(c)...)
		}
		return out
	}
	out := []Branch{{K: q.K}}
	for _, c := range q.Of {
		var next []Branch
		for _, b := range out {
			for _, f := range leaves(c) {
				next = append(next, Branch{K: b.K, Factors: append(slices.Clone(b.Factors), f.Factor)})
			}
		}
		out = next
	}
	return out
}

// Factors lists the distinct factors a policy names, in order of first
// mention.
func (p *Policy) Factors() []string {
	var out []string
	seen := map[string]bool{}
	for _, b := range p.Branches() {
		for _, f := range b.Factors {
			if !seen[f] {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	return out
}
