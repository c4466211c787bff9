package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/policy"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/tpm2"
)

// FactorRecovery is what the re-seal's audit names when the operator's
// recovery key gave the volume key.
const FactorRecovery = "recovery"

// TPMResealOptions tune TPMReseal.
type TPMResealOptions struct {
	// PIN is the PIN of the PIN keyslots; it becomes theirs. Without it a
	// PIN keyslot that needs resealing refuses the whole reseal before any
	// change. The caller wipes it.
	PIN *secret.Key
	// Force reseals keyslots whose PCRs still match too.
	Force bool
	// RecoveryKey, when set, gives the volume key instead of the platform
	// keyslot (the operator's recovery key vouches for the node; the KMS
	// is not asked): what a kms: tpm volume whose KEK no longer unseals
	// needs. The caller wipes it.
	RecoveryKey *secret.Key
}

// TPMReseal seals v's TPM keyslots again to today's PCR values, each with
// its own PCRs, bank and PIN: a new keyslot is enrolled and verified, then
// the old one removed. Keyslots whose PCRs still match are left alone
// unless o.Force. The volume key comes through the platform keyslot (the
// KMS), or the recovery key: something other than the TPM vouches for
// the node; the TPM is never its own witness. The tpm factor of v's
// policy is re-sealed as after an open (resealFactor), whatever
// tpm.reseal says: with the recovery key also for a policy that needed
// the TPM (all: [tpm, vault] after a PCR change), whose other factors
// must still wrap their new shares.
func (m *Manager) TPMReseal(ctx context.Context, v *Volume, o TPMResealOptions) (res *TPMResult, err error) {
	by := "kms"
	key := m.platformKeyOf
	if o.RecoveryKey != nil {
		by = FactorRecovery
		key = func(_ context.Context, c *change) (*secret.Key, error) { return m.openWith(c.v, c.dev, o.RecoveryKey) }
	}
	defer func() {
		m.audit(ctx, "tpm-reseal", v.UUID(), v.Name, v.Device, err, slog.String("trigger", "command"), slog.String("factors", by))
	}()
	// A token that does not parse is refused before the KMS is asked.
	if ids, _, errs := tpmTokens(v.Header); slices.ContainsFunc(errs, func(e error) bool { return e != nil }) {
		i := slices.IndexFunc(errs, func(e error) bool { return e != nil })
		return nil, fmt.Errorf("TPM keyslot token %d: %w", ids[i], errs[i])
	}
	res, err = m.tpmChange(ctx, v, "tpm-reseal", key, func(c *change, vk *secret.Key, res *TPMResult) error {
		// Decide everything before the first change: a missing PIN is
		// refused with nothing resealed.
		var stale []TPMKeyslot
		status := m.tpmStatus(c.v.Header)
		for _, s := range status {
			switch {
			case s.Bank == "": // unparsable token
				return fmt.Errorf("TPM keyslot %d: %w", s.Keyslot, tpmTokenError(c.v, s.Token))
			case !o.Force && !isStale(s):
				continue
			case s.PIN && o.PIN == nil:
				return fmt.Errorf("%w: TPM keyslot %d needs its PIN (--pin, or --pin-file)", ErrInvalidArgument, s.Keyslot)
			}
			stale = append(stale, s)
		}
		return c.resealTPM(ctx, vk, stale, status, o.PIN, res)
	})
	if err != nil {
		return nil, err
	}
	// A policy's tpm factor whose KEK no longer unseals after a PCR
	// change is re-sealed too, vouched for the same way (the KMS path
	// through vouchedKey: a factor that vouches must give the key).
	fkey := m.vouchedKey
	if o.RecoveryKey != nil {
		fkey = key
	}
	fres, err := m.resealFactor(ctx, v, triggerCommand, []string{by}, fkey)
	if err != nil {
		return res, fmt.Errorf("the TPM keyslots are done; the policy's tpm factor was not re-sealed: %w", err)
	}
	mergeFactor(res, fres)
	return res, nil
}

// ResealAfterOpen is what atrest open and atrestd call after v opened:
// by names the factors that opened it (OpenResult.By). When tpm.reseal is
// auto and one of them vouches for the node (a network KMS: Vault, KMIP;
// or the recovery key), each TPM keyslot without a PIN whose PCRs no
// longer match today's values is sealed again to them (same PCRs, bank
// and primary algorithm) through TPMReseal's sequence, audited and
// logged; and the tpm factor of v's unlock policy, when the TPM-sealed
// KEK no longer unseals because the PCRs changed, is re-sealed
// (resealFactor: the KEK sealed anew once per process, the policy's key
// material made again under it). Never when the TPM (kms: tpm's KEK or a
// TPM keyslot) or the local keystore on the same disk was all that opened
// it. PIN keyslots are left to atrest tpm reseal --pin. It returns nil,
// nil when there is nothing to do; the check costs PCR reads only, the
// re-seal one more KMS round trip for the volume key.
func (m *Manager) ResealAfterOpen(ctx context.Context, v *Volume, by []string) (*TPMResult, error) {
	return m.resealAll(ctx, v, by, m.vouchedKey)
}

// resealAll runs both re-seals of ResealAfterOpen with the volume key
// from key and merges what they did.
func (m *Manager) resealAll(ctx context.Context, v *Volume, by []string, key func(context.Context, *change) (*secret.Key, error)) (*TPMResult, error) {
	res, err := m.autoReseal(ctx, v, by, key)
	fres, ferr := m.resealFactor(ctx, v, triggerAuto, by, key)
	if res == nil {
		res = fres
	} else {
		mergeFactor(res, fres)
	}
	return res, errors.Join(err, ferr)
}

// mergeFactor adds what resealFactor did (fres, nil: nothing) to res.
func mergeFactor(res, fres *TPMResult) {
	if fres == nil {
		return
	}
	res.KEKRenewed, res.StaleKEK, res.PolicyKeyslots, res.Resumed = fres.KEKRenewed, fres.StaleKEK, fres.PolicyKeyslots, fres.Resumed
	res.Warnings = append(res.Warnings, fres.Warnings...)
}

// autoReseal is ResealAfterOpen with the volume key from key.
func (m *Manager) autoReseal(ctx context.Context, v *Volume, by []string, key func(context.Context, *change) (*secret.Key, error)) (res *TPMResult, err error) {
	if m.cfg.TPM.Reseal == config.ResealNever || !vouches(by) || len(tpmKeyslots(v)) == 0 {
		return nil, nil
	}
	status := m.tpmStatus(v.Header)
	if !slices.ContainsFunc(status, func(s TPMKeyslot) bool { return isStale(s) && !s.PIN }) {
		// A keyslot whose PCRs could not be compared (no TPM answering,
		// an unreadable token) may be stale: say so rather than leave it
		// silently.
		for _, s := range status {
			if s.PCRsMatch == nil && s.Error != "" {
				m.log.Warn("TPM keyslot not checked against today's PCRs: not re-sealed", "volume", v.UUID(), "name", v.Name,
					"keyslot", s.Keyslot, "error", s.Error)
			}
		}
		return nil, nil
	}
	factors := strings.Join(by, ",")
	defer func() {
		m.audit(ctx, "tpm-reseal", v.UUID(), v.Name, v.Device, err, slog.String("trigger", "auto"), slog.String("factors", factors))
	}()
	res, err = m.tpmChange(ctx, v, "tpm-reseal", key, func(c *change, vk *secret.Key, res *TPMResult) error {
		var stale []TPMKeyslot
		status := m.tpmStatus(c.v.Header)
		for _, s := range status {
			switch {
			case !isStale(s):
			case s.PIN:
				res.Warnings = append(res.Warnings, fmt.Sprintf("TPM keyslot %d (PIN) no longer matches today's PCRs: re-seal it with atrest tpm reseal %s --pin", s.Keyslot, c.v.Name))
			default:
				stale = append(stale, s)
			}
		}
		return c.resealTPM(ctx, vk, stale, status, nil, res)
	})
	if err != nil {
		m.log.Warn("TPM keyslot not re-sealed", "volume", v.UUID(), "name", v.Name, "factors", factors, "error", err.Error())
		return nil, err
	}
	for _, a := range res.Added {
		m.log.Info("TPM keyslot re-sealed to today's PCR values", "volume", v.UUID(), "name", v.Name,
			"keyslot", a.Keyslot, "pcrs", a.PCRs, "bank", a.Bank, "factors", factors)
	}
	return res, nil
}

// vouchedKey is the volume key through c's platform keyslot, refused
// unless the factors that gave it vouch for the node (the KMS may have
// gone away since the open, leaving only the TPM factor of a policy).
func (m *Manager) vouchedKey(ctx context.Context, c *change) (*secret.Key, error) {
	vk, by, err := m.platformKeyBy(ctx, c.v, c.dev)
	if err != nil {
		return nil, err
	}
	if !vouches(by) {
		vk.Wipe()
		return nil, fmt.Errorf("the volume key came through %s, which does not vouch for the node: the TPM keyslots are not re-sealed", strings.Join(by, ","))
	}
	return vk, nil
}

// vouches reports whether one of the factors by vouches for the node: a
// network KMS (it answers only this node's credentials, and can be told
// to stop) or the operator's recovery key. The TPM does not vouch for
// itself, and the local keystore lies on the same disk as everything an
// attacker with the node has.
func vouches(by []string) bool {
	for _, f := range by {
		switch f {
		case config.BackendVaultTransit, config.BackendVaultKV, config.BackendKMIP, policy.FactorVault, FactorRecovery: // policy.FactorKMIP is config.BackendKMIP
			return true
		}
	}
	return false
}

// isStale reports whether today's PCR values no longer satisfy s.
func isStale(s TPMKeyslot) bool { return s.PCRsMatch != nil && !*s.PCRsMatch }

// resealStepTime bounds one keyslot's re-seal step once it has begun
// (seal, add, verify, remove the old keyslot): a cancellation of the
// caller's context does not cut it short.
const resealStepTime = 30 * time.Second

// resealTPM replaces each keyslot of stale (all of them resealable: pin
// given where they need one) by a new one sealed to today's PCRs: enrolled
// and verified, then the old one removed, so a TPM keyslot exists at every
// step. A cancellation of ctx (atrestd stopped, its deadline hit) is
// honoured between keyslots only: the step it comes in is finished
// (within resealStepTime), so a keyslot is either re-sealed or left as it
// was. A crash between the two leaves both; the rerun then finds the new
// one (a verified twin: same binding, today's PCRs match) and only removes
// the old one, so no keyslot is left over.
func (c *change) resealTPM(ctx context.Context, vk *secret.Key, stale, status []TPMKeyslot, pin *secret.Key, res *TPMResult) error {
	used := map[int]bool{}
	for _, s := range stale {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("TPM keyslot %d not re-sealed (it stays as it was): %w", s.Keyslot, err)
		}
		var p *secret.Key
		if s.PIN {
			p = pin
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resealStepTime)
		err := c.resealOne(sctx, vk, s, status, used, p, res)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// resealOne is resealTPM's step for the keyslot s.
func (c *change) resealOne(ctx context.Context, vk *secret.Key, s TPMKeyslot, status []TPMKeyslot, used map[int]bool, pin *secret.Key, res *TPMResult) error {
	if twin := c.verifiedTwin(s, status, used, vk, pin); twin != nil {
		used[twin.Keyslot] = true
		res.Added = append(res.Added, *twin)
	} else {
		opts := TPMOptions{PCRs: s.PCRs, Bank: tpm2.Bank(s.Bank), PIN: pin}
		if err := c.enrollTPM(ctx, vk, opts, res); err != nil {
			return err
		}
		failpoint(c.op + "-after-verify")
	}
	if err := c.remove(ctx, []int{s.Keyslot}, nil); err != nil {
		return fmt.Errorf("the new TPM keyslot is verified, removing the old keyslot %d failed: %w", s.Keyslot, err)
	}
	failpoint(c.op + "-after-remove")
	res.Removed = append(res.Removed, s.Keyslot)
	return nil
}

// verifiedTwin finds among status a TPM keyslot with s's binding (PCRs,
// bank, primary algorithm, PIN) that today's PCRs satisfy and that
// unseals and opens to vk: the replacement an interrupted reseal added.
func (c *change) verifiedTwin(s TPMKeyslot, status []TPMKeyslot, used map[int]bool, vk, pin *secret.Key) *TPMKeyslot {
	for _, t := range status {
		if t.Keyslot == s.Keyslot || used[t.Keyslot] || t.PCRsMatch == nil || !*t.PCRsMatch ||
			!slices.Equal(t.PCRs, s.PCRs) || t.Bank != s.Bank || t.PrimaryAlg != s.PrimaryAlg || t.PIN != s.PIN {
			continue
		}
		probe := tpmSlot{id: t.Token, device: c.m.cfg.TPM.Device, pin: pin}
		if probe.verify(c.v.Header, c.dev, vk) == nil {
			t.Error = ""
			return &t
		}
	}
	return nil
}

// tpmTokenError is why token id of v does not parse.
func tpmTokenError(v *Volume, id int) error {
	t := v.Header.Tokens[id]
	if t == nil {
		return fmt.Errorf("%w: token %d is gone", tpm2.ErrBadToken, id)
	}
	_, err := tpm2.ParseToken(t.JSON())
	return err
}
