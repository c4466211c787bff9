// Package tpm is atrest's embedded KMS on a machine with a TPM 2.0
// (`kms: tpm`): one 256-bit key-encryption key, sealed by the TPM to PCR
// values (pkg/tpm2, systemd 252's scheme), in a root-only file in the state
// directory, used with AES-256-GCM and the volume UUID as additional data
// exactly as the file keystore (pkg/kms/local) uses its KEK.
//
// The KEK is unsealed once per process, on first use, and kept in locked
// memory: one unseal at boot serves every volume, as one batch does with
// Vault. Sealing the KEK rather than each volume's platform secret keeps
// the TPM off the per-volume path (docs/tpm.md argues the choice).
//
// What it protects beyond the file keystore: the sealed file is useless
// off this machine's TPM, and on it once the measured boot chain (the
// sealed PCRs) changed. What it does not: a stolen machine that boots its
// own unchanged chain still unseals (docs/tpm.md).
package tpm

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/internal/gcm"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/tpm2"
)

// Backend is the name tokens record for this backend.
const Backend = "tpm"

// FileName is the sealed KEK's file in the state directory.
const FileName = "tpm-kek.json"

const (
	prefix  = "tpm"
	adLabel = "atrest-tpm-kek-v1\x00"
	version = 1 // the sealed KEK has one version; a new one is a new file
)

// Config says where the TPM and the sealed KEK are and what new seals bind to.
type Config struct {
	// Device is what tpm2.Open takes ("auto", a path, "swtpm:host=,port=").
	Device string
	// Path is the sealed KEK's file.
	Path string
	// PCRs and Bank are the policy a new KEK is sealed under.
	PCRs []int
	Bank tpm2.Bank
}

// KEK is the TPM-sealed key-encryption key. Safe for concurrent use.
type KEK struct {
	cfg Config
	f   *file

	mu       sync.Mutex
	key      *secret.Key // unsealed, nil until first use
	unseals  int
	renewals int
	old      map[string]*KEK // renewed KEKs by id (nil: none kept), see Unwrap
}

var (
	_ kms.KEK     = (*KEK)(nil)
	_ kms.Checker = (*KEK)(nil)
)

// Open reads the sealed KEK at cfg.Path. When there is none and create is
// set, it seals a new 256-bit KEK on the TPM and writes the file
// crash-safely (a partial file is never seen; two processes creating at
// once end with one KEK); without create a missing file is
// kms.ErrKeyNotFound. Open does not unseal: the first Wrap or Unwrap does.
func Open(cfg Config, create bool) (*KEK, error) {
	f, err := readFile(cfg.Path)
	if errors.Is(err, os.ErrNotExist) {
		if !create {
			return nil, fmt.Errorf("%w: the TPM-sealed KEK %s does not exist", kms.ErrKeyNotFound, cfg.Path)
		}
		return seal(cfg)
	}
	if err != nil {
		return nil, err
	}
	return &KEK{cfg: cfg, f: f}, nil
}

// seal makes and writes a new KEK, keeping the secret it sealed as the
// unsealed key (no second trip to the TPM).
func seal(cfg Config) (*KEK, error) {
	t, err := tpm2.Open(cfg.Device)
	if err != nil {
		return nil, fmt.Errorf("tpm: seal a new KEK: %w", err)
	}
	key, res, err := t.Seal(tpm2.SealOptions{PCRs: cfg.PCRs, Bank: cfg.Bank})
	t.Close()
	if err != nil {
		return nil, fmt.Errorf("tpm: seal a new KEK: %w", err)
	}
	f, err := newFile(res.Sealed)
	if err == nil {
		err = f.create(cfg.Path)
	}
	if errors.Is(err, errExists) {
		// Another process sealed one first: use that one.
		key.Wipe()
		return Open(cfg, false)
	}
	if err != nil {
		key.Wipe()
		return nil, fmt.Errorf("%w: create %s: %w", kms.ErrConfig, cfg.Path, err)
	}
	return &KEK{cfg: cfg, f: f, key: key}, nil
}

// unsealed returns the KEK, asking the TPM the first time; the caller
// holds k.mu. A failed unseal is not remembered: the next call asks
// again (the PCRs or the TPM may have come back).
func (k *KEK) unsealed() (*secret.Key, error) {
	if k.key != nil {
		return k.key, nil
	}
	t, err := tpm2.Open(k.cfg.Device)
	if err != nil {
		return nil, fmt.Errorf("tpm: unseal the KEK %s: %w", k.cfg.Path, err)
	}
	defer t.Close()
	key, err := t.Unseal(&k.f.sealed, nil)
	if err != nil {
		return nil, fmt.Errorf("tpm: unseal the KEK %s: %w", k.cfg.Path, err)
	}
	k.key = key
	k.unseals++
	return key, nil
}

// Unseals counts the times this KEK asked the TPM to unseal: one per
// process however many volumes it serves.
func (k *KEK) Unseals() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.unseals
}

// Sealed is the KEK's TPM binding (PCRs, bank), for status and checks.
func (k *KEK) Sealed() tpm2.Sealed { return k.f.sealed }

// Path is the sealed KEK's file.
func (k *KEK) Path() string { return k.cfg.Path }

// Close wipes the unsealed KEK. The KEK unseals again if used after.
func (k *KEK) Close() error {
	k.mu.Lock()
	old := k.old
	k.old = nil
	k.key.Wipe()
	k.key = nil
	k.mu.Unlock()
	for _, o := range old {
		if o != nil {
			o.Close()
		}
	}
	return nil
}

// Backend returns "tpm".
func (k *KEK) Backend() string { return Backend }

// Key returns the sealed KEK's random id in hex: a KEK sealed anew (the
// file replaced) reports the old one's tokens as kms.ErrKeyNotFound.
func (k *KEK) Key() string { return hex.EncodeToString(k.f.id[:]) }

// Describe reports the one version, and fails as an unwrap would now: a
// process that has the KEK unsealed answers; else the TPM must be there
// (tpm2.ErrNoTPM, ErrTPMGone) and today's PCRs must match the seal
// (tpm2.ErrPCRMismatch). Status shows a policy's tpm factor broken from
// this, without unsealing.
func (k *KEK) Describe(context.Context) (kms.KeyInfo, error) {
	k.mu.Lock()
	have := k.key != nil
	k.mu.Unlock()
	if !have {
		if _, err := k.pcrsMatch(); err != nil {
			return kms.KeyInfo{}, err
		}
	}
	return kms.KeyInfo{Backend: Backend, Key: k.Key(), LatestVersion: version, MinDecryptionVersion: version}, nil
}

// pcrsMatch asks the TPM whether today's PCRs satisfy the seal; the error
// says what does not (no TPM, a PCR mismatch). It returns the device's
// detail for kms check.
func (k *KEK) pcrsMatch() (string, error) {
	t, err := tpm2.Open(k.cfg.Device)
	if err != nil {
		return "", fmt.Errorf("tpm: %w", err)
	}
	s := k.f.sealed
	ok, err := t.PCRsMatch(&s)
	t.Close()
	detail := fmt.Sprintf("%s: KEK %s sealed to %s PCRs %v", k.cfg.Device, k.cfg.Path, s.Bank, s.PCRs)
	if err == nil && !ok {
		err = fmt.Errorf("%w: PCRs %v changed since the KEK was sealed", tpm2.ErrPCRMismatch, s.PCRs)
	}
	return detail, err
}

func (k *KEK) additionalData(volume string) []byte {
	ad := make([]byte, 0, len(adLabel)+idLen+4+len(volume))
	ad = append(ad, adLabel...)
	ad = append(ad, k.f.id[:]...)
	ad = binary.BigEndian.AppendUint32(ad, version)
	return append(ad, volume...)
}

// Wrap encrypts each plaintext under the KEK, unsealing it first if this
// process has not yet.
func (k *KEK) Wrap(_ context.Context, reqs []kms.WrapRequest) ([]kms.WrapResult, error) {
	if err := kms.CheckRequests(reqs); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	key, err := k.unsealed()
	if err != nil {
		return nil, err
	}
	return gcm.WrapEach(reqs, k.sealer(key)), nil
}

func (k *KEK) sealer(key *secret.Key) gcm.Sealer {
	return func(volume string, pt *secret.Key) (kms.Wrapped, error) {
		ct, err := gcm.Seal(key, prefix, version, pt, k.additionalData(volume))
		if err != nil {
			return kms.Wrapped{}, err
		}
		return kms.Wrapped{Backend: Backend, Key: k.Key(), KeyVersion: version, Ciphertext: ct}, nil
	}
}

func (k *KEK) opener(key *secret.Key) gcm.Opener {
	return func(volume string, w kms.Wrapped) (*secret.Key, error) {
		n, err := gcm.Version(prefix, w.Ciphertext)
		if err != nil {
			return nil, err
		}
		if n != version {
			return nil, fmt.Errorf("%w: key version %d, the TPM-sealed KEK has only version %d", kms.ErrCiphertextRejected, n, version)
		}
		return gcm.Open(key, prefix, n, w.Ciphertext, k.additionalData(volume))
	}
}

// Unwrap decrypts each wrapped secret; the caller wipes the plaintexts.
// Tokens of another KEK fail alone, before the TPM is asked, except the
// tokens of a KEK this node renewed (its file kept at StalePath): those
// are unwrapped by that KEK, so they fail as the TPM says (a PCR mismatch
// while the boot chain stays changed, not "key not found") and open
// again should the PCRs come back.
func (k *KEK) Unwrap(_ context.Context, reqs []kms.UnwrapRequest) ([]kms.UnwrapResult, error) {
	stale := k.staleTokens(reqs)
	if len(stale) == 0 {
		return k.unwrap(reqs)
	}
	res := make([]kms.UnwrapResult, len(reqs))
	var own []int
	for i, r := range reqs {
		if _, ok := stale[r.Wrapped.Key]; !ok {
			own = append(own, i)
		}
	}
	groups := map[*KEK][]int{k: own}
	for id, old := range stale {
		for i, r := range reqs {
			if r.Wrapped.Key == id {
				groups[old] = append(groups[old], i)
			}
		}
	}
	for kek, idx := range groups {
		if len(idx) == 0 {
			continue
		}
		sub := make([]kms.UnwrapRequest, len(idx))
		for j, i := range idx {
			sub[j] = reqs[i]
		}
		r, err := kek.unwrap(sub)
		for j, i := range idx {
			if err != nil {
				res[i].Err = err
			} else {
				res[i] = r[j]
			}
		}
	}
	return res, nil
}

func (k *KEK) unwrap(reqs []kms.UnwrapRequest) ([]kms.UnwrapResult, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key, itemErrs, err := k.prepare(reqs)
	if err != nil {
		return nil, err
	}
	return gcm.UnwrapEach(reqs, itemErrs, k.opener(key)), nil
}

// staleTokens returns, by KEK id, the renewed KEKs whose tokens reqs
// holds (a token's key is not trusted: only a well-formed id whose stale
// file exists is looked up).
func (k *KEK) staleTokens(reqs []kms.UnwrapRequest) map[string]*KEK {
	var out map[string]*KEK
	for _, r := range reqs {
		id := r.Wrapped.Key
		if r.Wrapped.Backend != Backend || id == k.Key() || out[id] != nil {
			continue
		}
		if b, err := hex.DecodeString(id); err != nil || len(b) != idLen {
			continue
		}
		old := k.staleKEK(id)
		if old == nil {
			continue
		}
		if out == nil {
			out = map[string]*KEK{}
		}
		out[id] = old
	}
	return out
}

// staleKEK opens (once per process) the renewed KEK of id, or nil when
// this node kept none.
func (k *KEK) staleKEK(id string) *KEK {
	k.mu.Lock()
	defer k.mu.Unlock()
	if old, ok := k.old[id]; ok {
		return old
	}
	cfg := k.cfg
	cfg.Path = StalePath(k.cfg.Path, id)
	old, err := Open(cfg, false)
	if err != nil || old.Key() != id {
		old = nil
	}
	if k.old == nil {
		k.old = map[string]*KEK{}
	}
	k.old[id] = old
	return old
}

// Rewrap unwraps and wraps again (a fresh nonce; there is one version).
func (k *KEK) Rewrap(_ context.Context, reqs []kms.UnwrapRequest) ([]kms.WrapResult, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key, itemErrs, err := k.prepare(reqs)
	if err != nil {
		return nil, err
	}
	return gcm.RewrapEach(reqs, itemErrs, k.opener(key), k.sealer(key)), nil
}

// prepare checks an Unwrap or Rewrap batch, then unseals; the caller
// holds k.mu.
func (k *KEK) prepare(reqs []kms.UnwrapRequest) (*secret.Key, []error, error) {
	itemErrs, err := kms.CheckUnwrapRequests(k, reqs)
	if err != nil {
		return nil, nil, err
	}
	key, err := k.unsealed()
	return key, itemErrs, err
}

// Check diagnoses the TPM KEK for `atrest kms check`: the TPM answers,
// today's PCRs still satisfy the seal, and a probe round trip.
func (k *KEK) Check(ctx context.Context) []kms.CheckStep {
	detail, err := k.pcrsMatch()
	dev := kms.CheckStep{Name: "tpm", Detail: detail, Err: err}
	if err != nil {
		return []kms.CheckStep{dev}
	}
	return []kms.CheckStep{dev, kms.Probe(ctx, k)}
}

// DefaultPath is the sealed KEK's file in stateDir.
func DefaultPath(stateDir string) string { return filepath.Join(stateDir, FileName) }

// Renew seals a new KEK to today's PCR values in place of one that no
// longer unseals (the PCRs changed, or the TPM was cleared: ErrPCRMismatch,
// ErrOtherTPM): the old file is renamed to StalePath and kept, and the new
// one written crash-safely as Open writes it (a crash between the two
// leaves no file; the next wrap seals one). Tokens of the old KEK then
// fail as kms.ErrKeyNotFound until their volumes get new platform
// keyslots (atrest tpm reseal --kek with their recovery keys); Unwrap
// gives them to the stale KEK, which the TPM refuses as long as the PCRs
// stay changed. A KEK that
// still unseals is kept: renewed is false. Any other failure (no TPM) is
// returned with nothing changed.
func (k *KEK) Renew() (renewed bool, stale string, err error) {
	return k.renew(func(err error) bool {
		return errors.Is(err, tpm2.ErrPCRMismatch) || errors.Is(err, tpm2.ErrOtherTPM)
	})
}

// RenewAfterPCRChange is Renew for the automatic re-seal of a policy's
// tpm factor: only a KEK whose unseal fails because today's PCRs no longer
// match is sealed anew. Another TPM's (or a cleared TPM's) KEK, a TPM in
// lockout or no TPM at all is returned as the error with nothing changed:
// those are the operator's call (atrest tpm reseal --kek).
func (k *KEK) RenewAfterPCRChange() (renewed bool, stale string, err error) {
	return k.renew(func(err error) bool { return errors.Is(err, tpm2.ErrPCRMismatch) })
}

// renew is Renew for the unseal failures accept takes.
func (k *KEK) renew(accept func(error) bool) (renewed bool, stale string, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, err := k.unsealed(); err == nil {
		return false, "", nil
	} else if !accept(err) {
		return false, "", err
	}
	// Processes that renew at once (atrestd, atrest open, tpm reseal
	// --kek) take turns; one that finds a KEK another sealed since it
	// read the file uses that one instead of moving it aside.
	unlock, err := lockFile(k.cfg.Path + ".lock")
	if err != nil {
		return false, "", fmt.Errorf("tpm: renew the KEK: %w", err)
	}
	defer unlock()
	if cur, err := readFile(k.cfg.Path); err == nil && cur.id != k.f.id {
		k.f = cur
		_, err := k.unsealed()
		return false, "", err
	}
	stale = StalePath(k.cfg.Path, k.Key())
	if err := os.Rename(k.cfg.Path, stale); err != nil {
		return false, "", fmt.Errorf("tpm: move the stale KEK aside: %w", err)
	}
	n, err := seal(k.cfg)
	if err != nil {
		return false, stale, err
	}
	k.f, k.key = n.f, n.key
	k.renewals++
	return true, stale, nil
}

// Renewals counts the KEKs this process sealed anew in place of one that
// no longer unsealed: one per node however many volumes needed it.
func (k *KEK) Renewals() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.renewals
}

// StalePath is where Renew keeps the KEK of id that no longer unseals.
func StalePath(path, id string) string { return path + ".stale-" + id }
