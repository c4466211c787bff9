package backends

import (
	"context"
	"errors"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/policy"
)

// Checkers returns what `atrest kms check` diagnoses: the wrapping backend
// and, where configured, the raw-secret store and the escrow.
func (s *Set) Checkers() ([]kms.Checker, error) {
	var out []kms.Checker
	add := func(x any, err error) error {
		if err != nil {
			return err
		}
		if c, ok := x.(kms.Checker); ok {
			out = append(out, c)
		}
		return nil
	}
	switch s.Backend() {
	case config.BackendVaultKV:
		if err := add(s.Store()); err != nil {
			return nil, err
		}
	case config.BackendLocal, config.BackendTPM:
		// A diagnosis never creates the keystore: a missing one is the
		// finding (the first format creates it).
		open := s.localKEK
		if s.Backend() == config.BackendTPM {
			open = s.tpmKEK
		}
		k, err := open(false)
		if errors.Is(err, kms.ErrKeyNotFound) {
			out = append(out, missingKeystore{err})
		} else if err := add(k, err); err != nil {
			return nil, err
		}
	default:
		if err := add(s.Wrapper()); err != nil {
			return nil, err
		}
	}
	if s.cfg.Recovery.Mode == config.RecoveryEscrow {
		if err := add(s.Escrow()); err != nil {
			return nil, err
		}
	}
	return s.factorCheckers(out)
}

// factorCheckers adds to out a checker for every policy factor other than
// the kms: backend (checked already), its steps named after the factor.
func (s *Set) factorCheckers(out []kms.Checker) ([]kms.Checker, error) {
	for _, f := range s.cfg.PolicyFactors() {
		if factorBackend[f] == s.Backend() {
			continue
		}
		var k kms.KEK
		var err error
		switch f {
		case policy.FactorLocal, policy.FactorTPM:
			// As above: a diagnosis never creates the keystore nor
			// seals a KEK.
			open := s.localKEK
			if f == policy.FactorTPM {
				open = s.tpmKEK
			}
			if k, err = open(false); errors.Is(err, kms.ErrKeyNotFound) {
				out = append(out, factorChecker{f, missingKeystore{err}})
				continue
			}
		default:
			k, err = s.Factor(f)
		}
		if err != nil {
			return nil, err
		}
		if c, ok := k.(kms.Checker); ok {
			out = append(out, factorChecker{f, c})
		}
	}
	return out, nil
}

// factorChecker names a policy factor in each step of its check.
type factorChecker struct {
	factor string
	kms.Checker
}

// missingKeystore is kms check's finding for a local keystore that does
// not exist yet.
type missingKeystore struct{ err error }

func (f factorChecker) Check(ctx context.Context) []kms.CheckStep {
	steps := f.Checker.Check(ctx)
	for i := range steps {
		steps[i].Name = "factor " + f.factor + ": " + steps[i].Name
	}
	return steps
}

func (m missingKeystore) Check(context.Context) []kms.CheckStep {
	return []kms.CheckStep{{Name: "key file", Detail: "on a new node the first atrest format creates it; else restore it from its backup", Err: m.err}}
}
