package config

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/atrest/atrest/pkg/policy"
)

// validatePolicies checks the fleet policy and every volume's: their
// shape, and that each factor they name is a configured backend. The
// error carries the line of the offending node.
func (c *Config) validatePolicies() error {
	check := func(field string, p *policy.Policy) error {
		if p == nil {
			return nil
		}
		err := p.Validate(c.factorUsable)
		var pe *policy.Error
		if errors.As(err, &pe) {
			return &Error{Path: c.Path, Line: pe.Line, Field: field, Msg: pe.Msg}
		}
		return err
	}
	if err := check("policy", c.Policy); err != nil {
		return err
	}
	for i, v := range c.Volumes {
		if err := check("volumes["+strconv.Itoa(i)+"].policy", v.Policy); err != nil {
			return err
		}
	}
	return nil
}

// CheckPolicy checks a policy given outside the file (atrest policy
// set): its shape, and that each factor it names is configured here.
func (c *Config) CheckPolicy(p *policy.Policy) error { return p.Validate(c.factorUsable) }

// factorUsable says why a policy cannot use factor, or nil. Every factor
// is one configuration section; kmip's is checked by validateKMIP. tpm
// needs tpm.device, which defaults to auto (/dev/tpmrm0): whether the TPM
// is there is a matter of the machine, not of the file, so a missing TPM
// is a factor that fails at unlock (the policy's others decide), as a
// Vault that is down is.
func (c *Config) factorUsable(factor string) error {
	switch factor {
	case policy.FactorLocal, policy.FactorKMIP:
		return nil
	case policy.FactorVault:
		if c.Vault.Address == "" && os.Getenv("VAULT_ADDR") == "" {
			return fmt.Errorf("needs vault.address (or VAULT_ADDR)")
		}
		return nil
	case policy.FactorTPM:
		if c.TPM.Device == "" {
			return fmt.Errorf("needs tpm.device")
		}
		return nil
	default:
		return fmt.Errorf("unknown factor (want %s, %s, %s or %s: the backends configured in this file)", policy.FactorLocal, policy.FactorVault, policy.FactorKMIP, policy.FactorTPM)
	}
}
