package volume

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/recoverykey"
	"github.com/atrest/atrest/pkg/secret"
)

// Recovery is a recovery key made by format, rekey --recovery or recovery
// rotate.
type Recovery struct {
	// Mode is the policy applied: escrow, print or none.
	Mode string
	// Keyslot holds the recovery key (-1 with mode none).
	Keyslot int
	// Location is where an escrowed key went.
	Location string
	// Key is the recovery key itself in mode print, for the caller to show
	// once and then Wipe; nil otherwise.
	Key *secret.Key

	// A planned escrow (plannedRecovery): where and under which id the
	// key goes, and whether it went.
	escrow    kms.Escrow
	uuid      string
	escrowID  string
	deposited bool
	// sealed is the recovery keyslot sealed ahead for the volume key
	// (format), used by enroll; nil: enroll seals it.
	sealed *luks2.SealedKeyslot
}

// Wipe forgets the recovery key.
func (r *Recovery) Wipe() {
	if r != nil {
		r.Key.Wipe()
	}
}

// newRecovery makes a recovery key and escrows it when the policy says so.
// It runs before anything is written, so a failed escrow changes nothing.
// The caller enrolls it with enroll, then wipes it.
func (m *Manager) newRecovery(ctx context.Context, uuid, mode string) (*Recovery, error) {
	r, err := m.plannedRecovery(ctx, uuid, mode)
	if err == nil {
		err = r.deposit(ctx)
	}
	if err != nil {
		r.Wipe()
		return nil, err
	}
	return r, nil
}

// plannedRecovery makes a recovery key whose escrow (mode escrow) is
// asked, writing nothing, whether it would take the key, and deposits it
// only when deposit is called: format escrows last, once the volume
// exists, so a format that fails leaves no escrow entry behind. Location
// is already the one the deposit will have.
func (m *Manager) plannedRecovery(ctx context.Context, uuid, mode string) (*Recovery, error) {
	r, err := recoveryKey(mode)
	if err != nil {
		return nil, err
	}
	if err := m.planEscrow(ctx, r, uuid); err != nil {
		r.Wipe()
		return nil, err
	}
	return r, nil
}

// recoveryKey is the first half of plannedRecovery: the recovery key of
// mode (none: no key), nothing asked.
func recoveryKey(mode string) (*Recovery, error) {
	r := &Recovery{Mode: mode, Keyslot: -1}
	if mode == config.RecoveryNone {
		return r, nil
	}
	rk, err := recoverykey.Generate()
	if err != nil {
		return nil, err
	}
	r.Key = rk
	return r, nil
}

// planEscrow is the second half: in mode escrow, whether the escrow would
// take r's key for the volume uuid, and where it would go.
func (m *Manager) planEscrow(ctx context.Context, r *Recovery, uuid string) error {
	if r.Mode != config.RecoveryEscrow {
		return nil
	}
	esc, err := m.kms.Escrow()
	if err == nil {
		err = esc.CanDeposit(ctx, uuid)
	}
	if err != nil {
		return fmt.Errorf("escrow recovery key: %w", err)
	}
	r.escrow, r.uuid = esc, uuid
	r.escrowID = strconv.FormatInt(m.now().UTC().UnixNano(), 36)
	r.Location = esc.DepositLocation(uuid, r.escrowID)
	return nil
}

// deposit escrows a planned recovery key (nothing to do in other modes,
// or when it was deposited already).
func (r *Recovery) deposit(ctx context.Context) error {
	if r == nil || r.escrow == nil || r.deposited {
		return nil
	}
	loc, err := r.escrow.Deposit(ctx, r.uuid, r.escrowID, r.Key)
	if err != nil {
		return fmt.Errorf("escrow recovery key: %w", err)
	}
	r.Location, r.deposited = loc, true
	return nil
}

// enroll adds the recovery keyslot and its systemd-recovery token to u.
// The keyslot uses the same minimal PBKDF as systemd-cryptenroll
// --recovery-key: the key has 256 bits of entropy. For each key of also
// (a re-encryption's old volume key) the recovery key gets one more
// keyslot, bound to the same token: a re-encryption's start enrols the
// new recovery key under both keys, so that it alone gives both, as
// cryptsetup needs to resume. Keyslot is the one of vk.
func (r *Recovery) enroll(u *luks2.Update, vk *secret.Key, also ...*secret.Key) error {
	if r.Mode == config.RecoveryNone {
		return nil
	}
	opts := recoveryKeyslot()
	var err error
	if r.sealed != nil {
		r.Keyslot, err = u.AddSealed(vk, r.sealed, opts)
		r.sealed = nil
	} else {
		r.Keyslot, err = u.AddKeyslot(vk, r.Key, opts)
	}
	if err != nil {
		return fmt.Errorf("add recovery keyslot: %w", err)
	}
	slots := []string{strconv.Quote(strconv.Itoa(r.Keyslot))}
	for _, k := range also {
		s, err := u.AddKeyslot(k, r.Key, opts)
		if err != nil {
			return fmt.Errorf("add recovery keyslot: %w", err)
		}
		slots = append(slots, strconv.Quote(strconv.Itoa(s)))
	}
	tok := fmt.Sprintf(`{"type":%q,"keyslots":[%s]}`, recoverykey.TokenType, strings.Join(slots, ","))
	if _, err := u.SetToken(luks2.AnyToken, []byte(tok)); err != nil {
		return fmt.Errorf("add recovery token: %w", err)
	}
	return nil
}

// recoveryKeyslot describes a recovery keyslot: a platform keyslot's
// (the key has full entropy too), the minimal PBKDF systemd-cryptenroll
// --recovery-key uses.
func recoveryKeyslot() luks2.KeyslotOptions { return platformKeyslot() }

// verify checks that the enrolled recovery key opens its keyslot in h.
func (r *Recovery) verify(h *luks2.Header, dev luks2.Reader) error {
	if r.Mode == config.RecoveryNone {
		return nil
	}
	vk, err := openKeyslot(h, dev, r.Keyslot, r.Key)
	vk.Wipe()
	return err
}

// settle forgets the key once it is enrolled and verified, unless the
// policy is print (the caller shows it, then wipes it): nobody needs an
// escrowed key on this node.
func (r *Recovery) settle() {
	if r != nil && r.Mode != config.RecoveryPrint {
		r.Key.Wipe()
		r.Key = nil
	}
}

// record is what the atrest token says about the recovery key: "",
// "print", or "escrow:<location>".
func (r *Recovery) record() string {
	switch {
	case r == nil || r.Mode == config.RecoveryNone:
		return ""
	case r.Location != "":
		return "escrow:" + r.Location
	default:
		return r.Mode
	}
}
