package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/tpm"
	"github.com/atrest/atrest/pkg/policy"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
	"github.com/atrest/atrest/pkg/tpm2"
)

// The triggers of a re-seal in the audit log: the re-seal after an open
// (as tpm.reseal allows), or the operator's atrest tpm reseal (which
// tpm.reseal: never does not stop).
const (
	triggerAuto    = "auto"
	triggerCommand = "command"
)

// opTPMFactor names the re-seal of a policy's tpm factor in journals,
// failpoints and the audit log.
const opTPMFactor = "tpm-factor-reseal"

// pcrRenewer is the TPM-sealed KEK's capability to be sealed anew after a
// PCR change, and nothing else (pkg/kms/tpm).
type pcrRenewer interface {
	kms.KEK
	RenewAfterPCRChange() (renewed bool, stale string, err error)
}

// resealFactor re-enrols the tpm factor of v's unlock policy after a PCR
// change, when the factors by that opened v vouch for the node (vouches)
// and the tpm factor was not among them: the node's TPM-sealed KEK, when
// its unseal fails because today's PCRs no longer match (not lockout,
// another TPM or no TPM), is sealed anew to today's PCRs (RenewAfterPCRChange:
// once per process, the old file kept as tpm.StalePath; the next volume
// finds the new KEK in place), and v's policy key material is made again
// under the same policy through the one platform change sequence
// (replacePlatform, as policy set): fresh secrets, split where the policy
// shares, each share wrapped by its factor (every factor of the policy
// must answer), verified keyslot by keyslot, then the old platform
// keyslots removed; journaled, so an interruption leaves the old policy
// keyslots opening through the factors that opened v and the next call
// finishes or undoes it. key gives the volume key; trigger is triggerAuto
// (only as tpm.reseal allows) or triggerCommand. It returns nil, nil when
// there is nothing to do.
func (m *Manager) resealFactor(ctx context.Context, v *Volume, trigger string, by []string, key func(context.Context, *change) (*secret.Key, error)) (res *TPMResult, err error) {
	// An interrupted re-seal is finished (or undone) whatever opened the
	// volume: that makes no new key material, it only verifies what the
	// earlier run added and removes the old or the new keyslots.
	pending := m.factorResealPending(v)
	// The command's key function proves the vouching itself (the
	// recovery key, or vouchedKey).
	vouched := trigger == triggerCommand || m.cfg.TPM.Reseal != config.ResealNever && vouches(by) && !slices.Contains(by, policy.FactorTPM)
	if !pending && !vouched {
		return nil, nil
	}
	if _, renew := m.tpmFactorStale(ctx, v); !pending && !renew && !m.tpmFactorOrphaned(v) {
		return nil, nil
	}
	factors := strings.Join(by, ",")
	defer func() {
		m.audit(ctx, opTPMFactor, v.UUID(), v.Name, v.Device, err, slog.String("trigger", trigger), slog.String("factors", factors))
		if err != nil {
			m.log.Warn("policy factor tpm not re-sealed", "volume", v.UUID(), "name", v.Name, "factors", factors, "error", err.Error())
		}
	}()
	c, release, err := m.begin(ctx, v, opTPMFactor)
	if err != nil {
		return nil, err
	}
	defer release()
	res = &TPMResult{Name: v.Name, UUID: v.UUID()}
	if res.Resumed, err = c.finishInterrupted(ctx); err != nil {
		return nil, err
	}
	// Under the lock, with an interrupted run settled: is the tpm factor
	// still under a KEK that no longer unseals?
	kek, renew := m.tpmFactorStale(ctx, c.v)
	if !vouched || !renew && !m.tpmFactorOrphaned(c.v) {
		return resumedOnly(res), nil
	}
	p, err := policy.ParseCanonical(c.v.Platform.Policy.Expr)
	if err != nil {
		return nil, err
	}
	// The factors that vouch must give the volume key before the KEK is
	// touched: all: [tpm, vault] after a PCR change renews nothing.
	vk, err := key(ctx, c)
	if err != nil {
		return nil, err
	}
	defer vk.Wipe()
	if renew {
		renewed, stale, err := kek.RenewAfterPCRChange()
		m.audit(ctx, "tpm-kek-reseal", v.UUID(), v.Name, v.Device, err, slog.String("trigger", trigger), slog.String("factors", factors),
			slog.Bool("renewed", renewed), slog.String("stale", stale))
		if err != nil {
			return nil, err
		}
		if renewed {
			res.KEKRenewed, res.StaleKEK = true, stale
			m.log.Warn("TPM-sealed KEK sealed anew to today's PCR values (they had changed)", "stale", stale, "factors", factors)
		}
		failpoint(opTPMFactor + "-after-renew")
		if !m.tpmFactorOrphaned(c.v) {
			return resumedOnly(res), nil // it unsealed after all
		}
	}
	c.under = func() *policy.Policy { return p }
	_, tok, err := c.replacePlatform(ctx, vk, nil, nil)
	if err != nil {
		return nil, err
	}
	res.PolicyKeyslots, res.Warnings = tok.Slots(), c.warnings
	m.log.Info("policy factor tpm re-sealed to today's PCR values", "volume", v.UUID(), "name", v.Name,
		"policy", tok.Policy.Expr, "keyslots", fmt.Sprint(res.PolicyKeyslots), "factors", factors)
	return res, nil
}

// resumedOnly is res when it finished an interrupted re-seal, else nil:
// nothing was done.
func resumedOnly(res *TPMResult) *TPMResult {
	if res.Resumed == "" && !res.KEKRenewed {
		return nil
	}
	return res
}

// factorResealPending reports whether a re-seal of v's tpm factor was
// cut short (its journal is still there).
func (m *Manager) factorResealPending(v *Volume) bool {
	j, err := m.readJournal(v.UUID())
	return err == nil && j != nil && j.Op == opTPMFactor
}

// tpmFactorStale looks, without unsealing, at the tpm shares of v's
// policy that are under the node's current TPM-sealed KEK: when today's
// PCRs no longer satisfy that KEK's seal it returns the KEK and renew
// set. Else kek is nil (no tpm share, no KEK file, no TPM, or the KEK
// still matches).
func (m *Manager) tpmFactorStale(ctx context.Context, v *Volume) (kek pcrRenewer, renew bool) {
	if !v.Managed() || v.Platform.Policy == nil {
		return nil, false
	}
	k, err := m.kms.For(kms.Wrapped{Backend: tpm.Backend})
	if err != nil {
		return nil, false
	}
	r, ok := k.(pcrRenewer)
	if !ok || !slices.Contains(tpmShareKeys(v.Platform), k.Key()) {
		return nil, false
	}
	if _, err := k.Describe(ctx); !errors.Is(err, tpm2.ErrPCRMismatch) {
		return nil, false
	}
	return r, true
}

// tpmFactorOrphaned reports whether a tpm share of v's policy is under a
// TPM-sealed KEK that this node sealed anew (its file kept as
// tpm.StalePath: the old one no longer unsealed), so the share needs
// wrapping again under the current one.
func (m *Manager) tpmFactorOrphaned(v *Volume) bool {
	if !v.Managed() || v.Platform.Policy == nil {
		return false
	}
	path := tpm.DefaultPath(m.cfg.StateDir)
	for _, id := range tpmShareKeys(v.Platform) {
		if _, err := os.Lstat(tpm.StalePath(path, id)); err == nil {
			return true
		}
	}
	return false
}

// tpmShareKeys lists the KEK ids of t's tpm shares.
func tpmShareKeys(t *token.Token) []string {
	var out []string
	for _, b := range asPolicy(t).Branches {
		for _, s := range b.Shares {
			if s.KMS == tpm.Backend {
				out = append(out, s.Key)
			}
		}
	}
	return out
}

// factorResealHint is status's advice for a volume whose re-seal of its
// tpm factor was cut short: the next open's re-seal, or atrest tpm
// reseal, finishes or undoes it.
func factorResealHint(v *Volume) string {
	return fmt.Sprintf("a re-seal of the policy's tpm factor was interrupted (the old or the new policy keyslots open the volume meanwhile); the next atrest open or atrestd open finishes it, or run: atrest tpm reseal %s", v.Ref())
}

// staleTPMKEK is what status says of key material under the TPM-sealed
// KEK id when the node's KEK is another one (sealed anew after a PCR
// change): it does not unwrap any more.
func staleTPMKEK(m *Manager, id string) error {
	return fmt.Errorf("%w: under the TPM-sealed KEK %s, which this node sealed anew (kept as %s): a policy volume is re-sealed by its next open through a factor that vouches or by atrest tpm reseal; a kms: tpm volume needs atrest tpm reseal --kek",
		kms.ErrKeyNotFound, id, tpm.StalePath(tpm.DefaultPath(m.cfg.StateDir), id))
}
