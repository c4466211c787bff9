package token

import (
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/policy"
)

// Local reports whether every secret of the token is protected by a key
// that lives on the machine itself, the TPM or the local keystore, so the
// volume opens without any network: atrestd's early mode (atrestd
// --early, atrest-early.service) opens such volumes before
// local-fs.target. A policy token is local when each share of each branch
// is; a token that names a network KMS anywhere is not, even where a
// local branch alone would open it (that branch may refuse after a PCR
// change, and the volume then needs the network).
func (t *Token) Local() bool {
	if t == nil || t.Policy == nil {
		return t.plainLocal()
	}
	for _, b := range t.Policy.Branches {
		if !b.local() {
			return false
		}
	}
	return len(t.Policy.Branches) > 0
}

// LocalBranch reports whether one keyslot of the token opens with local
// keys alone: Local tokens, and policies such as any: [tpm, vault]. Such a
// volume may open the moment the TPM answers, whatever the network does.
func (t *Token) LocalBranch() bool {
	if t == nil || t.Policy == nil {
		return t.plainLocal()
	}
	for _, b := range t.Policy.Branches {
		if b.local() {
			return true
		}
	}
	return false
}

func (t *Token) plainLocal() bool {
	return t != nil && (t.KMS == config.BackendLocal || t.KMS == config.BackendTPM)
}

// local reports whether every share of the branch is under a local factor.
func (b Branch) local() bool {
	for _, s := range b.Shares {
		if s.Factor != policy.FactorLocal && s.Factor != policy.FactorTPM {
			return false
		}
	}
	return len(b.Shares) > 0
}
