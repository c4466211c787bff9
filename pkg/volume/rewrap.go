package volume

import (
	"context"
	"fmt"
	"sync"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// RewrapResult is one volume's rewrap.
type RewrapResult struct {
	Name, UUID string
	KMS, Key   string
	// From and To are the key versions before and after.
	From, To int
	// Skipped: the token already used the newest version, or the volume
	// keeps its secret in vault-kv (nothing to rewrap).
	Skipped bool
	// Warnings: what failed after the token was replaced (the header
	// backup); the rewrap itself succeeded.
	Warnings []string
	Err      error
}

// Rewrap moves the platform tokens of vols to their KEK's newest version:
// one KMS rewrap round trip per KEK for all of them, then one unwrap
// round trip per KEK for all the new ciphertexts, each secret checked
// against its keyslot, then each token replaced in one header commit
// (several volumes at a time). No keyslot and no data change. With force,
// tokens already at the newest version are rewrapped too. Policy tokens
// are rewrapped per factor (policyRewrap).
func (m *Manager) Rewrap(ctx context.Context, vols []*Volume, force bool) []RewrapResult {
	res := make([]RewrapResult, len(vols))
	infos := m.describeKEKs(ctx, vols)
	var reqs []kms.UnwrapRequest
	var idx []int
	for i, v := range vols {
		r := &res[i]
		r.Name, r.UUID = v.Name, v.UUID()
		if !v.Managed() {
			r.Err = fmt.Errorf("%s: %w", v.Device, ErrNotManaged)
			continue
		}
		t := v.Platform
		r.KMS, r.Key, r.From, r.To = t.KMS, t.Key, t.KeyVersion, t.KeyVersion
		if t.Policy != nil {
			continue // policyRewrap
		}
		if t.KMS == config.BackendVaultKV {
			r.Skipped = true
			continue
		}
		ki := infos[[2]string{t.KMS, t.Key}]
		if ki.err != nil {
			r.Err = ki.err
			continue
		}
		if !force && !ki.info.Stale(wrapped(t)) {
			r.Skipped = true
			continue
		}
		reqs = append(reqs, kms.UnwrapRequest{Context: v.UUID(), Wrapped: wrapped(t)})
		idx = append(idx, i)
	}
	m.policyRewrap(ctx, vols, res, infos, force)
	if len(reqs) == 0 {
		return res
	}
	rewrapped := observed(m, "rewrap", func() []kms.WrapResult { return m.kms.Rewrap(ctx, reqs) },
		func(r kms.WrapResult) error { return r.Err })
	// One unwrap batch for every new ciphertext: each must give back a
	// secret that opens its keyslot before it replaces the token.
	var uuids []string
	var toks []*token.Token
	var jdx []int
	for j, w := range rewrapped {
		if w.Err == nil {
			uuids, toks, jdx = append(uuids, vols[idx[j]].UUID()), append(toks, rewrappedToken(vols[idx[j]].Platform, w.Wrapped)), append(jdx, j)
		}
	}
	secrets := m.unwrapAll(ctx, uuids, toks)
	defer wipeUnlocked(secrets)
	secretOf := make([]*secret.Key, len(rewrapped))
	for k, j := range jdx {
		secretOf[j] = secrets[k].ps
		if err := secrets[k].err; err != nil {
			rewrapped[j].Err = fmt.Errorf("rewrapped secret does not unwrap, token left as it was: %w", err)
		}
	}
	checked := m.checkAhead(idx, vols, rewrapped, secretOf)
	// The volumes are independent (each under its own lock, with its own
	// header and backup files) and each replacement mostly waits for its
	// synced writes, so several run at once.
	var wg sync.WaitGroup
	sem := make(chan struct{}, changeParallel)
	for j, w := range rewrapped {
		i := idx[j]
		if w.Err != nil {
			res[i].Err = w.Err
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res[i].Warnings, res[i].Err = m.replaceToken(ctx, vols[i], w.Wrapped, secretOf[j], checked[j])
			if res[i].Err == nil {
				res[i].To = w.Wrapped.KeyVersion
			}
			m.audit(ctx, "rewrap", vols[i].UUID(), vols[i].Name, vols[i].Device, res[i].Err)
		}()
	}
	wg.Wait()
	return res
}

// changeParallel bounds the header changes Rewrap makes at once.
const changeParallel = 16

// rewrappedToken is t with its ciphertext replaced by w.
func rewrappedToken(t *token.Token, w kms.Wrapped) *token.Token {
	next := *t
	next.KMS, next.Key, next.KeyVersion, next.Ciphertext = w.Backend, w.Key, w.KeyVersion, w.Ciphertext
	return &next
}

// checkAhead opens, in one batch (luks2.OpenKeyslots: the KDFs in lanes),
// the platform keyslot of every volume vols[idx[j]] whose rewrapped[j]
// unwrapped to secretOf[j], before the volumes are locked, and returns per
// j the header the secret opened its keyslot in (nil: not checked, or it
// did not open; replaceToken then checks under the lock, and says so).
func (m *Manager) checkAhead(idx []int, vols []*Volume, rewrapped []kms.WrapResult, secretOf []*secret.Key) []*luks2.Header {
	checked := make([]*luks2.Header, len(rewrapped))
	var sel []*Volume
	var at []int
	for j, w := range rewrapped {
		if w.Err == nil && secretOf[j] != nil {
			sel, at = append(sel, vols[idx[j]]), append(at, j)
		}
	}
	devs, errs := openAll(sel)
	defer closeAll(devs)
	var jobs []luks2.KeyslotJob
	var of []int
	for n, v := range sel {
		if errs[n] == nil {
			jobs = append(jobs, luks2.KeyslotJob{Header: v.Header, Dev: devs[n], Slot: v.Platform.Keyslot, Passphrase: secretOf[at[n]]})
			of = append(of, at[n])
		}
	}
	keys, kerrs := luks2.OpenKeyslots(jobs)
	for n, j := range of {
		if kerrs[n] == nil {
			checked[j] = jobs[n].Header
		}
		keys[n].Wipe()
	}
	return checked
}

// replaceToken swaps the platform token's ciphertext for w, after checking
// that ps, what w unwrapped to, opens the keyslot: in the header checked,
// when the lock finds the device still holding exactly it (checkAhead), or
// now.
func (m *Manager) replaceToken(ctx context.Context, v *Volume, w kms.Wrapped, ps *secret.Key, checked *luks2.Header) ([]string, error) {
	c, release, err := m.begin(ctx, v, "rewrap")
	if err != nil {
		return nil, err
	}
	defer release()
	old := c.v.Platform
	if !sameCiphertexts(old, v.Platform) {
		return nil, fmt.Errorf("%s: the platform token changed while rewrapping; run rewrap again", v.Device)
	}
	next := rewrappedToken(old, w)
	next.Rotated = m.now().UTC()
	if c.v.Header != checked { // luks2.Reread gives the same header back only if the device still holds it byte for byte
		vk, err := c.v.Header.OpenKeyslot(c.dev, old.Keyslot, ps)
		if err != nil {
			return nil, fmt.Errorf("rewrapped secret does not open keyslot %d, token left as it was: %w", old.Keyslot, err)
		}
		vk.Wipe()
	}
	if err := m.ensureBackup(ctx, c.dev, c.v.Header); err != nil {
		return nil, err
	}
	err = c.setToken(ctx, c.v.TokenID, next)
	return c.warnings, err
}

// replaceWith swaps v's platform token for next, which carries new
// ciphertexts of the same secrets, after checking that they unwrap to
// secrets that open every keyslot of the token (taking a's answers
// first).
func (m *Manager) replaceWith(ctx context.Context, v *Volume, next *token.Token, a *answers) ([]string, error) {
	c, release, err := m.begin(ctx, v, "rewrap")
	if err != nil {
		return nil, err
	}
	defer release()
	c.known = a
	if !sameCiphertexts(c.v.Platform, v.Platform) {
		return nil, fmt.Errorf("%s: the platform token changed while rewrapping; run rewrap again", v.Device)
	}
	if err := c.verify(ctx, next, nil); err != nil {
		return nil, fmt.Errorf("rewrapped secret does not open keyslots %v, token left as it was: %w", next.Slots(), err)
	}
	if err := m.ensureBackup(ctx, c.dev, c.v.Header); err != nil {
		return nil, err
	}
	err = c.setToken(ctx, c.v.TokenID, next)
	return c.warnings, err
}

// setToken replaces token id with t in one commit, and refreshes the
// header backup.
func (c *change) setToken(ctx context.Context, id int, t *token.Token) error {
	data, err := t.Marshal()
	if err != nil {
		return err
	}
	u, err := c.v.Header.Begin()
	if err != nil {
		return err
	}
	if _, err := u.SetToken(id, data); err != nil {
		return err
	}
	h, err := u.Commit(ctx, c.dev)
	if err != nil {
		return err
	}
	// The committed header is what the device now holds (under the
	// volume lock nothing else changed it): no need to read it back.
	v, err := c.m.fromHeader(c.v.Device, h)
	if err != nil {
		return err
	}
	c.v = v
	c.refreshBackup(ctx)
	return nil
}
