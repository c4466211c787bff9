package volume

import (
	"slices"
	"strings"

	"github.com/atrest/atrest/pkg/token"
)

// PolicyStatus is a policy volume's factors as their KMSs answer now.
type PolicyStatus struct {
	// Expr is the policy, e.g. "any(vault,local)".
	Expr string `json:"expr"`
	// Factors has one entry per factor the policy names.
	Factors []FactorStatus `json:"factors"`
	// Satisfied: the factors that answer now are enough to open the
	// volume (reachability, as Describe tells it; kms check tries a
	// round trip).
	Satisfied bool `json:"satisfied"`
}

// FactorStatus is one factor of a policy volume: its KEK as KMSStatus
// says (KeyVersion the oldest among the factor's shares; Error set: the
// factor is broken).
type FactorStatus struct {
	Factor string `json:"factor"`
	// Alone: this factor by itself opens the volume (a branch of the
	// policy needs its share only), so with no Error it satisfies the
	// policy now.
	Alone bool `json:"alone"`
	KMSStatus
}

// policyStatus reports t's factors from infos (describeKEKs), adding a
// problem for each broken or stale factor and for a policy the answering
// factors do not satisfy.
func policyStatus(v *Volume, t *token.Token, infos map[[2]string]kekInfo, problem func(string, ...any)) *PolicyStatus {
	ps := &PolicyStatus{Expr: t.Policy.Expr, Factors: []FactorStatus{}}
	index := map[string]int{}
	for _, b := range t.Policy.Branches {
		for _, sh := range b.Shares {
			i, ok := index[sh.Factor]
			if !ok {
				i = len(ps.Factors)
				index[sh.Factor] = i
				f := FactorStatus{Factor: sh.Factor, KMSStatus: KMSStatus{Backend: sh.KMS, Key: sh.Key, KeyVersion: sh.KeyVersion}}
				if ki := infos[[2]string{sh.KMS, sh.Key}]; ki.err != nil {
					f.Error = ki.err.Error()
				} else {
					f.LatestVersion = ki.info.LatestVersion
				}
				ps.Factors = append(ps.Factors, f)
			}
			f := &ps.Factors[i]
			f.Alone = f.Alone || b.K == 1
			f.KeyVersion = min(f.KeyVersion, sh.KeyVersion)
			f.Stale = f.Error == "" && f.KeyVersion < f.LatestVersion
		}
	}
	var broken []string
	for _, f := range ps.Factors {
		if f.Error != "" {
			broken = append(broken, f.Factor)
			problem("policy factor %s is broken: %s", f.Factor, f.Error)
		}
		if f.Stale {
			problem("policy factor %s: shares wrapped with key version %d, latest is %d; run: atrest rewrap %s", f.Factor, f.KeyVersion, f.LatestVersion, v.Ref())
		}
	}
	for _, b := range t.Policy.Branches {
		up := 0
		for _, sh := range b.Shares {
			if !slices.Contains(broken, sh.Factor) {
				up++
			}
		}
		if up >= b.K {
			ps.Satisfied = true
		}
	}
	if !ps.Satisfied {
		problem("policy %s is not satisfied by the factors that answer now (broken: %s): the volume would not open; its recovery key still does", ps.Expr, strings.Join(broken, ", "))
	}
	return ps
}
