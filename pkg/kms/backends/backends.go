// Package backends builds the KMS backends that atrest's configuration file
// selects: the KEK that wraps new volumes' platform secrets, a registry that
// finds the KEK for any existing token, the raw-secret store of the vault-kv
// mode, and the recovery-key escrow. It is the only place that maps
// pkg/config onto pkg/kms/local, pkg/kms/vault and pkg/kms/kmip.
//
// Nothing here contacts a KMS: Vault and the KMIP server are first reached
// by the first operation, so backends can be built at boot before the
// network is up.
// The local keystore file is created on first use by the operations that
// need it, never by a read-only command.
package backends

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/kmip"
	"github.com/atrest/atrest/pkg/kms/local"
	"github.com/atrest/atrest/pkg/kms/tpm"
	"github.com/atrest/atrest/pkg/kms/vault"
	"github.com/atrest/atrest/pkg/policy"
	"github.com/atrest/atrest/pkg/tpm2"
)

// ErrNoEscrow means recovery mode escrow is configured without Vault.
var ErrNoEscrow = errors.New("recovery escrow needs vault")

// Set is the configured backends. Build one with Open; it is safe for
// concurrent use.
type Set struct {
	cfg    *config.Config
	getenv func(string) string

	mu       sync.Mutex
	reg      *kms.Registry
	keystore *local.Keystore
	client   *vault.Client
	store    *vault.KV
	escrow   *vault.KV
	kmip     *kmip.Client
	tpm      *tpm.KEK
	backend  string // the effective kms, decided on first use
}

// Open prepares the backends for cfg; getenv supplies VAULT_* overrides
// (os.Getenv in production).
func Open(cfg *config.Config, getenv func(string) string) (*Set, error) {
	s := &Set{cfg: cfg, getenv: getenv, reg: kms.NewRegistry()}
	if s.usesVault() {
		if _, err := s.vaultClient(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Set) usesVault() bool { return s.cfg.UsesVault() }

// Warm starts the connection to Vault in the background when the
// configuration uses Vault (vault.Client.Warm): a caller about to ask
// Vault calls it before its own preparations, which the TLS handshake
// then overlaps. No request is sent.
func (s *Set) Warm() {
	if c := s.Vault(); c != nil {
		c.Warm()
	}
}

// Backend names the backend that protects new volumes: the configured
// kms, or, when the configuration names none (config.KMSDefaulted), tpm
// if the machine has a TPM at tpm.device and local if not. The TPM is
// looked for once, on first use.
func (s *Set) Backend() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.backend == "" {
		s.backend = s.cfg.KMS
		if s.cfg.KMSDefaulted && tpm2.Present(s.cfg.TPM.Device) {
			s.backend = config.BackendTPM
		}
	}
	return s.backend
}

// Vault returns the Vault client, or nil when no Vault is configured.
func (s *Set) Vault() *vault.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client
}

func (s *Set) vaultClient() (*vault.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	v := s.cfg.Vault
	vc := vault.Config{
		Address:        v.Address,
		Addresses:      v.Addresses,
		MaxConcurrency: v.MaxConcurrency,
		Namespace:      v.Namespace,
		CACert:         v.CAFile,
		TLSServerName:  v.TLSServerName,
		Timeout:        v.Timeout,
		Deadline:       v.Deadline,
		ElectionWait:   v.ElectionWait,
		Auth: vault.Auth{
			Method:    v.Auth.Method,
			TokenFile: v.Auth.TokenFile,
			AppRole: vault.AppRole{
				Mount:           v.Auth.Mount,
				RoleID:          v.Auth.RoleID,
				RoleIDFile:      v.Auth.RoleIDFile,
				SecretIDFile:    v.Auth.SecretIDFile,
				SecretIDWrapped: v.Auth.WrappedSecretID,
			},
		},
	}
	vc, err := vc.WithEnv(s.getenv)
	if err != nil {
		return nil, err
	}
	cl, err := vault.New(vc)
	if err != nil {
		return nil, err
	}
	s.client = cl
	return cl, nil
}

// Wrapper returns the KEK that wraps new platform secrets, or nil with no
// error in vault-kv mode (where Store keeps the raw secret instead).
func (s *Set) Wrapper() (kms.KEK, error) {
	if s.Backend() == config.BackendVaultKV {
		return nil, nil
	}
	return s.Target(s.Backend())
}

// Factor returns the KEK of an unlock-policy factor (docs/policy.md):
// local is the local keystore, vault the Transit key vault.transit.key,
// kmip the key kmip.key names, tpm the TPM-sealed KEK (sealed on first
// use, as kms: tpm does). Each is configured by its own section, so
// any number of them serve at once; kms: only picks the one for volumes
// without a policy.
func (s *Set) Factor(name string) (kms.KEK, error) {
	b, ok := factorBackend[name]
	if !ok {
		return nil, fmt.Errorf("%w: policy factor %q", kms.ErrUnknownBackend, name)
	}
	return s.Target(b)
}

// factorBackend is the backend (kms: value) of each policy factor.
var factorBackend = map[string]string{
	policy.FactorLocal: config.BackendLocal,
	policy.FactorVault: config.BackendVaultTransit,
	policy.FactorKMIP:  config.BackendKMIP,
	policy.FactorTPM:   config.BackendTPM,
}

// KMIPKeyName expands "{hostname}" in the configured key name.
func KMIPKeyName(key string, hostname func() (string, error)) string {
	if !strings.Contains(key, "{hostname}") {
		return key
	}
	h, err := hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	return strings.ReplaceAll(key, "{hostname}", h)
}

// kmipKEK returns the KMIP key named key, registering it on first use:
// tokens made under an earlier name keep unwrapping after the
// configuration moves to a new one. The client certificate and key are
// read once, on first use.
func (s *Set) kmipKEK(key string) (kms.KEK, error) {
	if k, err := s.reg.Lookup(kmip.Backend, key); err == nil {
		return k, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kmip == nil {
		k := s.cfg.KMIP
		if k.Address == "" {
			return nil, fmt.Errorf("%w: a token names kmip key %q but the configuration has no kmip.address", kms.ErrKeyNotFound, key)
		}
		cl, err := kmip.New(kmip.Config{
			Address: k.Address, ServerName: k.ServerName, CAFile: k.CAFile, CertFile: k.CertFile, KeyFile: k.KeyFile,
			Key: key, Timeout: k.Timeout, Deadline: k.Deadline,
		})
		if err != nil {
			return nil, err
		}
		s.kmip = cl
	}
	kek := s.kmip.KEK(key, s.cfg.KMIP.Creates() && key == KMIPKeyName(s.cfg.KMIP.Key, os.Hostname))
	s.reg.Add(kek)
	return kek, nil
}

// localKEK opens the local keystore. Only create (wrapping a new secret)
// makes the file when it does not exist: unwrapping through a keystore
// that is missing is ErrKeyNotFound, and a later call looks again, so a
// keystore restored from backup is picked up without a restart.
func (s *Set) localKEK(create bool) (kms.KEK, error) {
	return openOnce(s, &s.keystore, func() (*local.Keystore, error) {
		if _, err := os.Lstat(s.cfg.Local.Keystore); !create && errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: the local keystore %s does not exist", kms.ErrKeyNotFound, s.cfg.Local.Keystore)
		}
		return local.Open(s.cfg.Local.Keystore)
	})
}

// tpmKEK opens the TPM-sealed KEK in the state directory; only create
// seals a new one when there is none, as with the local keystore.
func (s *Set) tpmKEK(create bool) (kms.KEK, error) {
	return openOnce(s, &s.tpm, func() (*tpm.KEK, error) {
		t := s.cfg.TPM
		return tpm.Open(tpm.Config{Device: t.Device, Path: tpm.DefaultPath(s.cfg.StateDir), PCRs: t.PCRs, Bank: tpm2.Bank(t.Bank)}, create)
	})
}

// openOnce returns *slot, opening it and registering it on first use; a
// failed open is tried again by the next call.
func openOnce[T interface {
	comparable
	kms.KEK
}](s *Set, slot *T, open func() (T, error)) (kms.KEK, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var none T
	if *slot == none {
		k, err := open()
		if err != nil {
			return nil, err
		}
		*slot = k
		s.reg.Add(k)
	}
	return *slot, nil
}

// Target returns the configured KEK of backend (local, tpm, vault-transit
// or kmip), creating the local keystore or sealing the TPM KEK if there is
// none yet: where rewrap --to moves tokens.
func (s *Set) Target(backend string) (kms.KEK, error) {
	switch backend {
	case config.BackendLocal:
		return s.localKEK(true)
	case config.BackendTPM:
		return s.tpmKEK(true)
	case config.BackendVaultTransit:
		return s.transit(s.cfg.Vault.Transit.Key)
	case config.BackendKMIP:
		return s.kmipKEK(KMIPKeyName(s.cfg.KMIP.Key, os.Hostname))
	default:
		return nil, fmt.Errorf("%w: %q is not a KEK backend (want %s, %s, %s or %s)", kms.ErrConfig, backend,
			config.BackendLocal, config.BackendTPM, config.BackendVaultTransit, config.BackendKMIP)
	}
}

// transit returns the Transit KEK named key on the configured mount,
// registering it on first use: tokens made under an earlier key name keep
// unwrapping after the configuration moves to a new key.
func (s *Set) transit(key string) (kms.KEK, error) {
	if k, err := s.reg.Lookup(vault.BackendTransit, key); err == nil {
		return k, nil
	}
	cl, err := s.vaultClient()
	if err != nil {
		return nil, err
	}
	t, err := vault.NewTransit(cl, vault.TransitConfig{Mount: s.cfg.Vault.Transit.Mount, Key: key})
	if err != nil {
		return nil, err
	}
	s.reg.Add(t)
	return t, nil
}

// For returns the KEK that unwraps w: the local keystore or a Transit key
// (by the name the token records).
func (s *Set) For(w kms.Wrapped) (kms.KEK, error) {
	switch w.Backend {
	case local.Backend:
		return s.localKEK(false)
	case tpm.Backend:
		return s.tpmKEK(false)
	case vault.BackendTransit:
		return s.transit(w.Key)
	case kmip.Backend:
		return s.kmipKEK(w.Key)
	default:
		return nil, fmt.Errorf("%w: token names backend %q", kms.ErrUnknownBackend, w.Backend)
	}
}

// Unwrap unwraps a batch of tokens that may belong to different KEKs, one
// round trip per KEK. The result has one entry per request; the caller
// wipes every Plaintext.
func (s *Set) Unwrap(ctx context.Context, reqs []kms.UnwrapRequest) []kms.UnwrapResult {
	if err := s.register(reqs); err != nil {
		out := make([]kms.UnwrapResult, len(reqs))
		for i := range out {
			out[i].Err = err
		}
		return out
	}
	return s.reg.Unwrap(ctx, reqs)
}

// Rewrap rewraps a batch to each KEK's newest version.
func (s *Set) Rewrap(ctx context.Context, reqs []kms.UnwrapRequest) []kms.WrapResult {
	if err := s.register(reqs); err != nil {
		out := make([]kms.WrapResult, len(reqs))
		for i := range out {
			out[i].Err = err
		}
		return out
	}
	return s.reg.Rewrap(ctx, reqs)
}

// register makes sure every KEK the batch names is in the registry, so
// that the registry can route the batch. An unknown backend is left to the
// registry, which fails only that item.
func (s *Set) register(reqs []kms.UnwrapRequest) error {
	for _, r := range reqs {
		if _, err := s.For(r.Wrapped); err != nil && !errors.Is(err, kms.ErrUnknownBackend) {
			return err
		}
	}
	return nil
}

// Store returns the KV store of raw platform secrets (vault-kv mode).
func (s *Set) Store() (kms.SecretStore, error) {
	s.mu.Lock()
	have := s.store
	s.mu.Unlock()
	if have != nil {
		return have, nil
	}
	cl, err := s.vaultClient()
	if err != nil {
		return nil, err
	}
	kv := s.cfg.Vault.KV
	st, err := vault.NewKV(cl, vault.KVConfig{Mount: kv.Mount, Version: kv.Version, Prefix: kv.Prefix, Host: kv.Hostname})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.store = st
	s.mu.Unlock()
	return st, nil
}

// StoreLocation says where Store keeps volume's secret, for tokens.
func (s *Set) StoreLocation(volume string) (string, error) {
	st, err := s.Store()
	if err != nil {
		return "", err
	}
	return st.(*vault.KV).Location(volume), nil
}

// Vaultlocker returns a read-only view of vaultlocker's KV layout
// (<mount>/<hostname>/<uuid>, field dmcrypt_key), for adoption.
func (s *Set) Vaultlocker(mount string, version int) (kms.SecretStore, error) {
	cl, err := s.vaultClient()
	if err != nil {
		return nil, err
	}
	c := vault.Vaultlocker(mount, s.cfg.Vault.KV.Hostname)
	if version != 0 {
		c.Version = version
	}
	return vault.NewKV(cl, c)
}

// Escrow returns where recovery keys are escrowed.
func (s *Set) Escrow() (kms.Escrow, error) {
	s.mu.Lock()
	have := s.escrow
	s.mu.Unlock()
	if have != nil {
		return have, nil
	}
	if !s.usesVault() {
		return nil, ErrNoEscrow
	}
	cl, err := s.vaultClient()
	if err != nil {
		return nil, err
	}
	v := s.cfg.Vault
	e, err := vault.NewKV(cl, vault.KVConfig{Mount: v.Escrow.Mount, Version: v.KV.Version, Prefix: v.Escrow.Prefix, Host: v.KV.Hostname, Escrow: true})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.escrow = e
	s.mu.Unlock()
	return e, nil
}

// Close releases the local keystore and the Vault client's connections.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		s.client.Close()
	}
	if s.tpm != nil {
		s.tpm.Close()
	}
	if s.keystore != nil {
		return s.keystore.Close()
	}
	return nil
}
