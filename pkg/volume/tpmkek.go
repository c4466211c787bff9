package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/tpm2"
)

// kekRenewer is the TPM-sealed KEK's capability to be sealed anew
// (pkg/kms/tpm).
type kekRenewer interface {
	Renew() (renewed bool, stale string, err error)
}

// TPMResealKEK is the way back for a kms: tpm volume whose sealed KEK no
// longer unseals (a PCR change, a cleared TPM): the operator's recovery
// key vouches for the node, the KEK is sealed anew to today's PCRs (the
// old file kept beside it; once per node, the next volume finds the new
// KEK in place), and the volume gets a new platform keyslot under it
// through the recovery reseal sequence (Reseal). Refused with nothing
// changed when key opens no keyslot, when the volume still opens through
// the KEK, or when the TPM is not there. stale names the old KEK's file
// when this call moved it aside.
func (m *Manager) TPMResealKEK(ctx context.Context, v *Volume, key *secret.Key) (res *RekeyResult, stale string, err error) {
	if !v.Managed() || v.Platform.KMS != config.BackendTPM {
		return nil, "", fmt.Errorf("%w: %s is not a kms: tpm volume", ErrInvalidArgument, v.Ref())
	}
	if err := m.kekResealNeeded(ctx, v, key); err != nil {
		return nil, "", err
	}
	kek, err := m.kms.Wrapper()
	if err != nil {
		return nil, "", err
	}
	r, ok := kek.(kekRenewer)
	if !ok {
		// Another configured KMS: atrest recovery reseal moves the
		// volume under it, no new TPM KEK needed.
		return nil, "", fmt.Errorf("%w: the configured KMS (%s) is not the TPM-sealed KEK: atrest recovery reseal %s moves the volume under it", ErrInvalidArgument, m.kms.Backend(), v.Name)
	}
	renewed, stale, err := r.Renew()
	m.audit(ctx, "tpm-kek-reseal", v.UUID(), v.Name, v.Device, err, slog.Bool("renewed", renewed), slog.String("stale", stale))
	if err != nil {
		return nil, stale, err
	}
	if renewed {
		m.log.Warn("TPM-sealed KEK sealed anew to today's PCR values; the volumes of the old KEK need atrest tpm reseal --kek with their recovery keys", "stale", stale)
	}
	res, err = m.Reseal(ctx, v, key)
	return res, stale, err
}

// kekResealNeeded checks, before anything changes, that key opens v and
// that v no longer opens through its KEK for a reason a new KEK mends.
func (m *Manager) kekResealNeeded(ctx context.Context, v *Volume, key *secret.Key) error {
	d, err := v.open(false)
	if err != nil {
		return err
	}
	defer d.Close()
	vk, err := m.openWith(v, d, key)
	if err != nil {
		return err
	}
	vk.Wipe()
	vk, err = m.platformKey(ctx, v, d)
	switch {
	case err == nil:
		vk.Wipe()
		return fmt.Errorf("%w: %s still opens through the TPM-sealed KEK: nothing to re-seal (atrest tpm reseal without --kek re-seals TPM keyslots)", ErrInvalidArgument, v.Ref())
	case errors.Is(err, tpm2.ErrPCRMismatch), errors.Is(err, tpm2.ErrOtherTPM), errors.Is(err, kms.ErrKeyNotFound):
		return nil
	}
	return err
}
