package volume

import (
	"context"
	"errors"
	"fmt"

	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/tpm2"
)

// FactorTPMKeyslot is what OpenResult.By, status's last unlock and the
// audit trail say for a volume opened through one of its systemd-tpm2
// keyslots (atrest tpm enroll, or systemd-cryptenroll's), not through
// the platform keyslot.
const FactorTPMKeyslot = "tpm-keyslot"

// PINFunc gives the PIN of v's TPM keyslots that need one, asked for only
// when such a keyslot is the way left to open v. It returns nil, nil when
// there is no one to ask (those keyslots are then not tried). Open wipes
// what it returns.
type PINFunc func(v *Volume) (*secret.Key, error)

// openByTPMKeyslots opens, through their TPM keyslots, the volumes of
// vols whose platform path failed (errs[i] set, the device open) and that
// are not under an unlock policy: one TPM connection for all of them. A volume that opens gets its key in
// keys, its factor in by and no error; one that does not keeps the
// platform path's error with each TPM keyslot's failure joined to it, so
// a TPM failure (a changed PCR) is what classifies it. Keyslots that need
// a PIN are tried only when pin gives one.
func (m *Manager) openByTPMKeyslots(ctx context.Context, vols []*Volume, devs []*device, errs []error, keys []*secret.Key, by [][]string, pin PINFunc) {
	var tp *tpm2.TPM
	var tpErr error
	defer func() {
		if tp != nil {
			tp.Close()
		}
	}()
	for i, v := range vols {
		// The TPM is local and quick: a KMS that ran out the deadline
		// does not stop it, only a cancellation (shutdown) does.
		if errs[i] == nil || devs[i] == nil || errors.Is(ctx.Err(), context.Canceled) {
			continue
		}
		// A policy volume opens as its policy says: a TPM keyslot must
		// not open offline what all: [tpm, vault] keeps closed (a TPM
		// that may open alone belongs in the policy: any: [tpm, vault]).
		if v.Platform != nil && v.Platform.Policy != nil {
			continue
		}
		_, toks, perrs := tpmTokens(v.Header)
		if len(toks) == 0 {
			continue
		}
		if tp == nil && tpErr == nil {
			tp, tpErr = tpm2.Open(m.cfg.TPM.Device)
		}
		var pinKey *secret.Key
		var failures []error
		for j, tok := range toks {
			if perrs[j] != nil {
				failures = append(failures, fmt.Errorf("TPM keyslot token: %w", perrs[j]))
				continue
			}
			vk, err := m.openTPMKeyslot(v, devs[i], tp, tpErr, tok, &pinKey, pin)
			if err != nil {
				failures = append(failures, fmt.Errorf("TPM keyslot %d: %w", tok.Keyslot, err))
				continue
			}
			keys[i], by[i], errs[i], failures = vk, []string{FactorTPMKeyslot}, nil, nil
			m.noteUnlocked(v.UUID(), by[i])
			break
		}
		pinKey.Wipe()
		if len(failures) > 0 {
			errs[i] = &fallbackError{platform: errs[i], tpm: errors.Join(failures...)}
		}
	}
}

// openTPMKeyslot unseals tok's secret on tp and opens its keyslot on dev.
// *pinKey caches the PIN pin gave for the volume.
func (m *Manager) openTPMKeyslot(v *Volume, dev *device, tp *tpm2.TPM, tpErr error, tok *tpm2.Token, pinKey **secret.Key, pin PINFunc) (*secret.Key, error) {
	if tpErr != nil {
		return nil, tpErr
	}
	if tok.PIN && *pinKey == nil {
		if pin == nil {
			return nil, fmt.Errorf("%w (give it with atrest open --pin or --pin-file)", tpm2.ErrPINRequired)
		}
		k, err := pin(v)
		if err != nil {
			return nil, err
		}
		if k == nil {
			return nil, fmt.Errorf("%w (give it with atrest open --pin or --pin-file)", tpm2.ErrPINRequired)
		}
		*pinKey = k
	}
	var p *secret.Key
	if tok.PIN {
		p = *pinKey
	}
	sec, err := tp.Unseal(&tok.Sealed, p)
	if err != nil {
		return nil, err
	}
	pass, err := tpm2.Passphrase(sec)
	sec.Wipe()
	if err != nil {
		return nil, err
	}
	defer pass.Wipe()
	return v.Header.OpenKeyslot(dev, tok.Keyslot, pass)
}

// fallbackError is a volume that opened neither through its platform
// keyslot nor through a TPM keyslot. It unwraps to both failures; the
// classifier tries the TPM's kinds first, so a changed PCR or a TPM in
// lockout is what the exit code says, with the KMS's failure in the
// message.
type fallbackError struct{ platform, tpm error }

func (e *fallbackError) Error() string {
	return fmt.Sprintf("%v; the TPM keyslots did not open it either: %v", e.platform, e.tpm)
}

func (e *fallbackError) Unwrap() []error { return []error{e.tpm, e.platform} }
