package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/atrest/atrest/pkg/kms"
)

// BackendTransit is the name tokens record for Vault Transit.
const BackendTransit = "vault-transit"

// TransitConfig names the transit key.
type TransitConfig struct {
	// Mount is where the transit engine is mounted; default "transit".
	Mount string `json:"mount,omitempty"`
	// Key is the transit key's name, e.g. "atrest-node7". It must be a
	// derived key (derived=true), so that each volume's UUID selects its
	// own encryption key.
	Key string `json:"key"`
	// MaxBatch bounds the items per request; larger batches are split.
	// Default 1000.
	MaxBatch int `json:"max_batch,omitempty"`
}

// DefaultMaxBatch is TransitConfig.MaxBatch's default.
const DefaultMaxBatch = 1000

// Transit is a Vault Transit key used as atrest's KEK: encrypt, decrypt
// and rewrap with batch_input, the volume UUID as the derivation context,
// the key version read from each ciphertext ("vault:v3:...").
type Transit struct {
	cl       *Client
	mount    string
	key      string
	maxBatch int

	mu      sync.Mutex
	derived bool // the key was read and is derived (requireDerived)
}

var (
	_ kms.KEK      = (*Transit)(nil)
	_ kms.Rotator  = (*Transit)(nil)
	_ kms.Retirer  = (*Transit)(nil)
	_ kms.Session  = (*Transit)(nil)
	_ kms.Preparer = (*Transit)(nil)
	_ kms.Checker  = (*Transit)(nil)
)

// NewTransit uses the transit key cfg.Key through cl.
func NewTransit(cl *Client, cfg TransitConfig) (*Transit, error) {
	if cfg.Key == "" || strings.Contains(cfg.Key, "/") {
		return nil, fmt.Errorf("%w: vault transit key name %q", kms.ErrConfig, cfg.Key)
	}
	if cfg.Mount = strings.Trim(cfg.Mount, "/"); cfg.Mount == "" {
		cfg.Mount = "transit"
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	return &Transit{cl: cl, mount: cfg.Mount, key: cfg.Key, maxBatch: cfg.MaxBatch}, nil
}

// Backend returns "vault-transit".
func (t *Transit) Backend() string { return BackendTransit }

// Key returns the transit key's name.
func (t *Transit) Key() string { return t.key }

// Client is the Vault client the key is used through.
func (t *Transit) Client() *Client { return t.cl }

// KeepAlive keeps the client's token fresh; see Client.KeepAlive.
func (t *Transit) KeepAlive(ctx context.Context) error { return t.cl.KeepAlive(ctx) }

func (t *Transit) path(op string) string { return t.mount + "/" + op + "/" + t.key }

// Describe reads the key's versions (transit/keys/<key>).
func (t *Transit) Describe(ctx context.Context) (kms.KeyInfo, error) {
	d, err := t.read(ctx)
	if err != nil {
		return kms.KeyInfo{}, err
	}
	return d.info(t), nil
}

// keyData is the part of transit/keys/<key> atrest uses.
type keyData struct {
	Type                 string `json:"type"`
	Derived              bool   `json:"derived"`
	LatestVersion        int    `json:"latest_version"`
	MinDecryptionVersion int    `json:"min_decryption_version"`
	MinEncryptionVersion int    `json:"min_encryption_version"`
	DeletionAllowed      bool   `json:"deletion_allowed"`
	Exportable           bool   `json:"exportable"`
}

func (d keyData) info(t *Transit) kms.KeyInfo {
	min := d.MinDecryptionVersion
	if min < 1 {
		min = 1
	}
	return kms.KeyInfo{Backend: BackendTransit, Key: t.key, LatestVersion: d.LatestVersion, MinDecryptionVersion: min}
}

func (t *Transit) read(ctx context.Context) (keyData, error) {
	rep, err := t.cl.do(ctx, call{op: "transit read key", method: http.MethodGet, path: t.mount + "/keys/" + t.key})
	if err != nil {
		return keyData{}, err
	}
	var out struct {
		Data keyData `json:"data"`
	}
	if err := decode(rep, "transit read key", &out); err != nil {
		return keyData{}, err
	}
	return out.Data, nil
}

// checkDerived refuses a key that is not derived: Vault ignores the
// context for such a key, so a secret would not be bound to its volume
// (another volume's ciphertext would unwrap, caught only at the keyslot).
// `kms check` and every new wrap apply this one check.
func (t *Transit) checkDerived(d keyData) error {
	if !d.Derived {
		return fmt.Errorf("%w: transit key %q is not derived: wrapped secrets would not be bound to their volume (create it with derived=true)", kms.ErrConfig, t.key)
	}
	return nil
}

// requireDerived reads the key once per Transit (the node's policy may
// read transit/keys/<key>, docs/vault.md) and refuses it when it is not
// derived. Wrap and Rewrap, which make the ciphertexts tokens record,
// call it first; Unwrap does not, so volumes wrapped earlier still open
// and can be resealed under a derived key.
func (t *Transit) requireDerived(ctx context.Context) error {
	t.mu.Lock()
	ok := t.derived
	t.mu.Unlock()
	if ok {
		return nil
	}
	d, err := t.read(ctx)
	if err != nil {
		return err
	}
	if err := t.checkDerived(d); err != nil {
		return err
	}
	t.mu.Lock()
	t.derived = true
	t.mu.Unlock()
	return nil
}

// Prepare logs in and checks the key as Wrap does first (requireDerived),
// so that a format can do both while it checks the device.
func (t *Transit) Prepare(ctx context.Context) error {
	if err := t.requireDerived(ctx); err != nil {
		return t.explainDenied(ctx, err)
	}
	return nil
}

// Rotate adds a key version (transit/keys/<key>/rotate). Nodes' policies
// normally do not allow it; administrators do.
func (t *Transit) Rotate(ctx context.Context) (kms.KeyInfo, error) {
	if _, err := t.cl.do(ctx, call{op: "transit rotate", method: http.MethodPut, path: t.mount + "/keys/" + t.key + "/rotate", body: []byte("{}"), once: true}); err != nil {
		return kms.KeyInfo{}, err
	}
	return t.Describe(ctx)
}

// SetMinDecryptionVersion sets the key's min_decryption_version. Vault
// keeps the older versions: lowering the minimum again restores them.
func (t *Transit) SetMinDecryptionVersion(ctx context.Context, v int) (kms.KeyInfo, error) {
	if v < 1 {
		return kms.KeyInfo{}, fmt.Errorf("%w: minimum decryption version %d", kms.ErrInvalidRequest, v)
	}
	body := newJSONBuf(48).raw(`{"min_decryption_version":`).int(v).raw("}").bytes()
	if _, err := t.cl.do(ctx, call{op: "transit configure key", method: http.MethodPut, path: t.mount + "/keys/" + t.key + "/config", body: body}); err != nil {
		return kms.KeyInfo{}, err
	}
	return t.Describe(ctx)
}

// explainDenied turns a 403 on encrypt into ErrKeyNotFound when the key
// does not exist: a node's policy allows only updates on encrypt, so Vault
// answers a missing key with 403 (creating it would need "create").
func (t *Transit) explainDenied(ctx context.Context, err error) error {
	if !errors.Is(err, kms.ErrPermissionDenied) {
		return err
	}
	if _, derr := t.read(ctx); errors.Is(derr, kms.ErrKeyNotFound) {
		return &Error{Op: "transit encrypt", Kind: kms.ErrKeyNotFound,
			Reason: fmt.Sprintf("transit key %q does not exist at %s/ (see docs/vault.md)", t.key, t.mount)}
	}
	return err
}
