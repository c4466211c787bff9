package volume

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/atrest/atrest/pkg/recoverykey"
	"github.com/atrest/atrest/pkg/token"
	"github.com/atrest/atrest/pkg/tpm2"
)

// What a re-encryption found on the device is settled here before (or
// instead of) a run: a run another tool started on a policy volume is
// refused, --resume with nothing to resume does nothing, and a run
// cryptsetup finished gets its tokens settled.

// foreignPolicyRun refuses a policy volume's re-encryption that another
// tool started (cryptsetup reencrypt --init-only with one branch's
// secret): atrest starts one with the new policy token in the same commit,
// so a policy volume in re-encryption with one policy token (or one that
// no longer parses: cryptsetup bound it to the new keyslot too) was not
// started by atrest, and only that branch was re-enrolled.
func (c *change) foreignPolicyRun() error {
	st, err := c.v.Header.Reencryption()
	if st == nil || err != nil {
		return nil
	}
	foreign := c.v.Managed() && c.v.Platform.Policy != nil && len(c.v.Others) == 0
	for _, u := range c.v.Unreadable {
		var doc struct{ KMS string }
		if json.Unmarshal(c.v.Header.Tokens[u.ID].JSON(), &doc) == nil && doc.KMS == token.KMSPolicy && !c.v.Managed() {
			foreign = true
		}
	}
	if !foreign {
		return nil
	}
	return fmt.Errorf("%w: %s: the re-encryption under way was not started by atrest (the volume's unlock policy was not made again for the new key, one branch was re-enrolled): finish it with cryptsetup reencrypt --resume-only, then atrest policy set %s --recovery-key makes the policy again; nothing was changed", ErrInvalidArgument, c.v.Ref(), c.v.Ref())
}

// resumeNothing is Reencrypt --resume of a volume whose header records no
// re-encryption: a run cut short after its last header write gets its
// header backup refreshed (Resumed); otherwise nothing is done
// (Unchanged).
func (c *change) resumeNothing(ctx context.Context) *ReencryptResult {
	res := &ReencryptResult{Name: c.v.Name, UUID: c.v.UUID(), Device: c.v.Device, OldKeyslot: -1, NewKeyslot: c.v.Platform.Keyslot}
	if c.m.backupInfo(ctx, c.v.Header).Current {
		res.Unchanged = true
	} else {
		c.refreshBackup(ctx)
		res.Resumed = true
	}
	res.Warnings = c.warnings
	return res
}

// settleHandover completes a re-encryption another tool finished
// (cryptsetup reencrypt --resume-only on a run atrest started): cryptsetup
// removed the old keyslots and left the atrest token bound to none, and
// the old recovery token too. The atrest token is bound to the keyslot its
// secret opens now and recovery tokens bound to no keyslot are removed, in
// one commit. A policy volume's run finished by cryptsetup leaves the new
// policy token bound to its keyslots and the old one, the old recovery
// and TPM tokens bound to none: those are removed (dropUnbound). It
// returns the platform keyslot, or -1 when there was nothing to settle.
func (c *change) settleHandover(ctx context.Context) (int, error) {
	h := c.v.Header
	if c.v.Platform != nil {
		return c.dropUnbound(ctx)
	}
	if c.v.Platform != nil || len(c.v.Unreadable) == 0 || len(c.v.Unreadable[0].Keyslots) > 0 {
		return -1, nil
	}
	if st, err := h.Reencryption(); st != nil || err != nil {
		return -1, nil
	}
	id := c.v.Unreadable[0].ID
	var doc map[string]any
	if err := json.Unmarshal(h.Tokens[id].JSON(), &doc); err != nil {
		return -1, nil
	}
	bind := func(slot int) ([]byte, *token.Token, error) {
		doc["keyslots"] = []string{strconv.Itoa(slot)}
		data, err := json.Marshal(doc)
		if err != nil {
			return nil, nil, err
		}
		tok, err := token.Parse(data)
		return data, tok, err
	}
	_, tok, err := bind(0)
	if err != nil {
		return -1, nil // unreadable for another reason: status says why
	}
	secrets := c.m.unwrapAll(ctx, []string{h.UUID}, []*token.Token{tok})
	defer wipeUnlocked(secrets)
	if secrets[0].err != nil {
		return -1, secrets[0].err
	}
	bound := map[int]bool{}
	for _, t := range h.Tokens {
		for _, ks := range t.Keyslots {
			bound[ks] = true
		}
	}
	for _, slot := range h.KeyslotIDs() {
		if bound[slot] || h.Keyslots[slot].Type != "luks2" {
			continue
		}
		vk, err := h.OpenKeyslot(c.dev, slot, secrets[0].ps)
		if err != nil {
			continue
		}
		vk.Wipe()
		data, _, err := bind(slot)
		if err != nil {
			return -1, err
		}
		u, err := h.Begin()
		if err != nil {
			return -1, err
		}
		if _, err := u.SetToken(id, data); err != nil {
			return -1, err
		}
		for tid, t := range h.Tokens {
			if t.Type == recoverykey.TokenType && len(t.Keyslots) == 0 {
				if err := u.RemoveToken(tid); err != nil {
					return -1, err
				}
			}
		}
		if _, err := u.Commit(ctx, c.dev); err != nil {
			return -1, c.afterFailedCommit(ctx, err)
		}
		return slot, c.reload(ctx)
	}
	return -1, nil
}

// dropUnbound removes, from a header not in re-encryption whose platform
// token is readable, the atrest, recovery and systemd-tpm2 tokens bound to
// no keyslot (they open nothing: cryptsetup left them so when it finished
// a policy volume's re-encryption), in one commit. It returns the platform
// keyslot, or -1 when there was none to remove.
func (c *change) dropUnbound(ctx context.Context) (int, error) {
	h := c.v.Header
	if st, err := h.Reencryption(); st != nil || err != nil {
		return -1, nil
	}
	var gone []int
	for _, id := range h.TokenIDs() {
		t := h.Tokens[id]
		if len(t.Keyslots) == 0 && (t.Type == token.Type || t.Type == recoverykey.TokenType || t.Type == tpm2.TokenType) {
			gone = append(gone, id)
		}
	}
	if len(gone) == 0 {
		return -1, nil
	}
	u, err := h.Begin()
	if err != nil {
		return -1, err
	}
	for _, id := range gone {
		if err := u.RemoveToken(id); err != nil {
			return -1, err
		}
	}
	if _, err := u.Commit(ctx, c.dev); err != nil {
		return -1, c.afterFailedCommit(ctx, err)
	}
	if err := c.reload(ctx); err != nil {
		return -1, err
	}
	return c.v.Platform.Keyslot, nil
}
