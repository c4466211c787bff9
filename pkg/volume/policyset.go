package volume

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/atrest/atrest/pkg/policy"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// opPolicySet names policy set in journals, failpoints and the audit log.
const opPolicySet = "policy-set"

// PolicySetOptions say what SetPolicy moves a volume to.
type PolicySetOptions struct {
	// Policy is the new unlock policy, validated against the configuration
	// (config.CheckPolicy); nil moves the volume to the kms: backend alone.
	Policy *policy.Policy
	// Resume only finishes (or undoes) an interrupted change; Policy is
	// not used.
	Resume bool
	// Key, when set, opens the volume key instead of the old policy (the
	// recovery key, or another passphrase of the volume): for an old
	// policy whose factors cannot satisfy it any more. The caller wipes
	// it.
	Key *secret.Key
}

// Keys is what protects a volume's platform secret: a policy (its
// canonical form) or, without one, the backend kms: names, and the
// keyslots that hold it.
type Keys struct {
	Policy   string `json:"policy,omitempty"`
	KMS      string `json:"kms"`
	Keyslots []int  `json:"keyslots"`
}

func keysOf(t *token.Token) Keys {
	k := Keys{KMS: t.KMS, Keyslots: t.Slots()}
	if t.Policy != nil {
		k.Policy = t.Policy.Expr
	}
	return k
}

// PolicySetResult is one volume's policy change.
type PolicySetResult struct {
	Name, UUID, Device string
	From, To           Keys
	// Unchanged: the volume already was under the policy asked for (or,
	// with Resume, there was nothing else to do).
	Unchanged bool
	// Resumed says what happened to an earlier, interrupted change that
	// this run found: "completed", "rolled back", or "".
	Resumed string
	// Warnings: what failed after the change was complete (the header
	// backup); the change itself succeeded.
	Warnings []string
}

// SetPolicy moves v to another unlock policy (or to none) through the one
// platform change sequence (change.go): the new keyslots and token are
// added, every keyslot opened through every share of its branch, then the
// old platform keyslots and token removed, journaled, so that a process
// that dies at any step leaves the old or the new policy opening the
// volume and the next SetPolicy (or rekey) of it finishes or undoes the
// change. The volume key, the data and the recovery keyslots do not
// change. The old policy must still be satisfied (its factors give the
// volume key; or o.Key opens it) and every factor of the new one must
// answer; otherwise nothing on the device changes and the error names the
// factor.
func (m *Manager) SetPolicy(ctx context.Context, v *Volume, o PolicySetOptions) (res *PolicySetResult, err error) {
	to := "none"
	switch {
	case o.Resume:
		to = "resume"
	case o.Policy != nil:
		to = o.Policy.String()
	}
	defer func() { m.audit(ctx, opPolicySet, v.UUID(), v.Name, v.Device, err, slog.String("policy", to)) }()
	if o.Policy != nil && !o.Resume {
		if err := m.cfg.CheckPolicy(o.Policy); err != nil {
			return nil, fmt.Errorf("%w: policy %s: %v", ErrInvalidArgument, to, err)
		}
	}
	c, release, err := m.begin(ctx, v, opPolicySet)
	if err != nil {
		return nil, err
	}
	defer release()
	res = &PolicySetResult{Name: c.v.Name, UUID: c.v.UUID(), Device: c.v.Device}
	j, err := m.readJournal(c.v.UUID())
	if err != nil {
		return nil, err
	}
	if res.Resumed, err = c.finishInterrupted(ctx); err != nil {
		return nil, err
	}
	if !c.v.Managed() {
		return nil, fmt.Errorf("policy set: %w", c.v.errNotManaged())
	}
	if res.Resumed == "" && j != nil {
		// Cut short with one platform token on the device: before its
		// new keyslots were written, or after the old ones were removed.
		res.Resumed = "rolled back"
		if j.NewKeyslot >= 0 && c.v.Platform.Keyslot == j.NewKeyslot {
			res.Resumed = "completed"
		}
	}
	res.From = keysOf(c.v.Platform)
	if o.Resume || m.alreadyUnder(c.v.Platform, o.Policy) {
		// A change cut short after its last header commit left the
		// backup older than the header: this run finishes that too.
		if err := m.ensureBackup(ctx, c.dev, c.v.Header); err != nil {
			c.warnings = append(c.warnings, err.Error()+"; run: atrest header backup "+c.v.Ref())
		}
		res.To, res.Unchanged, res.Warnings = res.From, true, c.warnings
		return res, nil
	}
	var vk *secret.Key
	if o.Key != nil {
		vk, err = m.openWith(c.v, c.dev, o.Key)
	} else {
		vk, err = m.platformKey(ctx, c.v, c.dev)
	}
	if err != nil {
		return nil, err
	}
	defer vk.Wipe()
	c.under = func() *policy.Policy { return o.Policy }
	_, tok, err := c.replacePlatform(ctx, vk, nil, nil)
	if err != nil {
		return nil, err
	}
	res.To, res.Warnings = keysOf(tok), c.warnings
	return res, nil
}

// alreadyUnder reports whether t's key material is what policy p (nil:
// the kms: backend alone) would make.
func (m *Manager) alreadyUnder(t *token.Token, p *policy.Policy) bool {
	if p == nil {
		return t.Policy == nil && t.KMS == m.kms.Backend()
	}
	return t.Policy != nil && t.Policy.Expr == p.String()
}

// policySetHint is status's advice for a volume whose policy change was
// cut short (its journal says policy-set): policy set --resume finishes
// it, or undoes it when the new keyslots do not open.
func policySetHint(v *Volume) string {
	return fmt.Sprintf("a policy change is under way or was interrupted (the old or the new policy opens the volume meanwhile); run: atrest policy set %s --resume", v.Ref())
}
