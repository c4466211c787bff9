package volume

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/token"
)

// MoveResult is one volume's move under another KEK.
type MoveResult struct {
	Name, UUID string
	// From and To are the backend and key before and after.
	FromKMS, FromKey string
	ToKMS, ToKey     string
	// Skipped: the token is already under the target KEK.
	Skipped bool
	// Warnings: what failed after the token was replaced (the header
	// backup); the move itself succeeded.
	Warnings []string
	Err      error
}

// RewrapTo moves the platform tokens of vols under the KEK to (say, from
// the file keystore to the TPM: rewrap --to tpm): each secret is unwrapped
// by the KMS its token names (one batch per KEK), wrapped by to (one
// batch), checked against its keyslot, and the token replaced in one
// header commit. No keyslot and no data change; a volume that fails
// anywhere keeps its token as it was.
func (m *Manager) RewrapTo(ctx context.Context, vols []*Volume, to kms.KEK) []MoveResult {
	res := make([]MoveResult, len(vols))
	var uuids []string
	var toks []*token.Token
	var idx []int
	for i, v := range vols {
		r := &res[i]
		r.Name, r.UUID, r.ToKMS, r.ToKey = v.Name, v.UUID(), to.Backend(), to.Key()
		if !v.Managed() {
			r.Err = fmt.Errorf("%s: %w", v.Device, ErrNotManaged)
			continue
		}
		if v.Platform.Policy != nil {
			r.Err = fmt.Errorf("%w: %s is under the unlock policy %s (one share per factor), which rewrap --to cannot move; change its factors with: atrest policy set %s POLICY (docs/policy.md)", ErrInvalidArgument, v.Ref(), v.Platform.Policy.Expr, v.Ref())
			continue
		}
		r.FromKMS, r.FromKey = v.Platform.KMS, v.Platform.Key
		if r.FromKMS == r.ToKMS && r.FromKey == r.ToKey {
			r.Skipped = true
			continue
		}
		uuids, toks, idx = append(uuids, v.UUID()), append(toks, v.Platform), append(idx, i)
	}
	if len(idx) == 0 {
		return res
	}
	secrets := m.unwrapAll(ctx, uuids, toks)
	defer wipeUnlocked(secrets)
	var reqs []kms.WrapRequest
	var wrapIdx []int
	for j, i := range idx {
		if secrets[j].err != nil {
			res[i].Err = secrets[j].err
			continue
		}
		reqs = append(reqs, kms.WrapRequest{Context: uuids[j], Plaintext: secrets[j].ps})
		wrapIdx = append(wrapIdx, i)
	}
	if len(reqs) == 0 {
		return res
	}
	wrapped, err := to.Wrap(ctx, reqs)
	if err == nil && len(wrapped) != len(reqs) {
		err = fmt.Errorf("%s: wrap returned %d results for %d requests", to.Backend(), len(wrapped), len(reqs))
	}
	// A new backend: each new ciphertext is unwrapped through it once
	// more, all in one batch, and must open its keyslot (replaceWith)
	// before it replaces the token.
	next := make([]*token.Token, len(wrapIdx))
	var nextUUIDs []string
	var nextToks []*token.Token
	for j, i := range wrapIdx {
		if err == nil && wrapped[j].Err == nil {
			next[j] = rewrappedToken(vols[i].Platform, wrapped[j].Wrapped)
			next[j].Rotated = m.now().UTC()
			nextUUIDs, nextToks = append(nextUUIDs, vols[i].UUID()), append(nextToks, next[j])
		}
	}
	a := m.unwrapEach(ctx, nextUUIDs, nextToks)
	defer a.wipe()
	for j, i := range wrapIdx {
		v := vols[i]
		switch {
		case err != nil:
			res[i].Err = err
		case wrapped[j].Err != nil:
			res[i].Err = wrapped[j].Err
		default:
			res[i].Warnings, res[i].Err = m.replaceWith(ctx, v, next[j], a)
		}
		m.audit(ctx, "rewrap-to", v.UUID(), v.Name, v.Device, res[i].Err,
			slog.String("from", res[i].FromKMS), slog.String("to", res[i].ToKMS))
	}
	return res
}
