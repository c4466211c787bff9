package vault

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/secret"
)

// BackendKV names the KV store in tokens and messages.
const BackendKV = "vault-kv"

// KVConfig places secrets in a KV secrets engine at
// <mount>/[<prefix>/]<host>/<volume uuid>[/<escrow id>], the layout
// vaultlocker uses (with an empty prefix).
type KVConfig struct {
	// Mount is the KV engine's mount; default "secret".
	Mount string `json:"mount,omitempty"`
	// Version is the KV engine's version, 2 (default) or 1. vaultlocker
	// writes to version 1 mounts unless configured otherwise.
	Version int `json:"version,omitempty"`
	// Prefix goes between the mount and the host name; default empty.
	Prefix string `json:"prefix,omitempty"`
	// Host is this node's name in the path; default os.Hostname().
	Host string `json:"host,omitempty"`
	// Field is the key inside the secret's data; default "secret".
	// vaultlocker uses "dmcrypt_key".
	Field string `json:"field,omitempty"`
	// Encoding is how the secret's bytes are stored in the field:
	// "base64" (default) or "raw" for secrets that are themselves text,
	// such as vaultlocker's dm-crypt passphrases.
	Encoding string `json:"encoding,omitempty"`
	// Escrow says this location receives recovery keys: the node may
	// create but not read there, and Check treats read access as a
	// finding, not a requirement.
	Escrow bool `json:"escrow,omitempty"`
}

// Vaultlocker returns the KVConfig that reads what vaultlocker stored:
// KV version 1 at <mount>/<host>/<uuid>, field dmcrypt_key, the key text
// itself being the LUKS passphrase.
func Vaultlocker(mount, host string) KVConfig {
	return KVConfig{Mount: mount, Version: 1, Host: host, Field: "dmcrypt_key", Encoding: "raw"}
}

// KV stores raw secrets (kms.SecretStore) and escrows recovery keys
// (kms.Escrow) in a Vault KV engine.
type KV struct {
	cl  *Client
	cfg KVConfig
}

var (
	_ kms.SecretStore = (*KV)(nil)
	_ kms.Escrow      = (*KV)(nil)
	_ kms.Checker     = (*KV)(nil)
	_ kms.Session     = (*KV)(nil)
	_ kms.Preparer    = (*KV)(nil)
)

// Prepare logs in, so that a format can do it while it checks the device.
func (k *KV) Prepare(ctx context.Context) error {
	_, err := k.cl.ensureToken(ctx)
	return err
}

// NewKV validates cfg and returns a KV store using cl.
func NewKV(cl *Client, cfg KVConfig) (*KV, error) {
	bad := func(format string, a ...any) (*KV, error) {
		return nil, fmt.Errorf("%w: vault kv: %s", kms.ErrConfig, fmt.Sprintf(format, a...))
	}
	if cfg.Mount = strings.Trim(cfg.Mount, "/"); cfg.Mount == "" {
		cfg.Mount = "secret"
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	switch cfg.Version {
	case 0:
		cfg.Version = 2
	case 1, 2:
	default:
		return bad("version %d (want 1 or 2)", cfg.Version)
	}
	if cfg.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return bad("host name: %v", err)
		}
		cfg.Host = h
	}
	if err := pathPart("host", cfg.Host); err != nil {
		return nil, err
	}
	if cfg.Field == "" {
		cfg.Field = "secret"
	}
	switch cfg.Encoding {
	case "":
		cfg.Encoding = "base64"
	case "base64", "raw":
	default:
		return bad("encoding %q (want base64 or raw)", cfg.Encoding)
	}
	return &KV{cl: cl, cfg: cfg}, nil
}

// KeepAlive keeps the client's token fresh; see Client.KeepAlive.
func (kv *KV) KeepAlive(ctx context.Context) error { return kv.cl.KeepAlive(ctx) }

func pathPart(what, s string) error {
	if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\x00") {
		return fmt.Errorf("%w: vault kv: %s %q cannot be a path component", kms.ErrInvalidRequest, what, s)
	}
	return nil
}

// rel is the secret's path below the mount.
func (kv *KV) rel(parts ...string) string {
	all := []string{}
	if kv.cfg.Prefix != "" {
		all = append(all, kv.cfg.Prefix)
	}
	all = append(all, kv.cfg.Host)
	return strings.Join(append(all, parts...), "/")
}

// dataPath is the API path to read or write a secret.
func (kv *KV) dataPath(rel string) string {
	if kv.cfg.Version == 1 {
		return kv.cfg.Mount + "/" + rel
	}
	return kv.cfg.Mount + "/data/" + rel
}

// Location is where a volume's secret lives, as the vault CLI names it.
func (kv *KV) Location(volume string) string { return kv.cfg.Mount + "/" + kv.rel(volume) }

// Put stores s for volume, create-only.
func (kv *KV) Put(ctx context.Context, volume string, s *secret.Key) error {
	if err := pathPart("volume", volume); err != nil {
		return err
	}
	return kv.create(ctx, "kv put", kv.rel(volume), s)
}

// Deposit escrows s for volume under id, create-only, and returns its
// location.
func (kv *KV) Deposit(ctx context.Context, volume, id string, s *secret.Key) (string, error) {
	if err := pathPart("volume", volume); err != nil {
		return "", err
	}
	if err := pathPart("escrow id", id); err != nil {
		return "", err
	}
	rel := kv.rel(volume, id)
	if err := kv.create(ctx, "kv escrow", rel, s); err != nil {
		return "", err
	}
	return kv.cfg.Mount + "/" + rel, nil
}

// DepositLocation is where Deposit(volume, id) escrows a secret.
func (kv *KV) DepositLocation(volume, id string) string {
	return kv.cfg.Mount + "/" + kv.rel(volume, id)
}

// CanDeposit checks, writing nothing, that Vault answers and the node's
// policy may create escrow entries for volume (sys/capabilities-self).
func (kv *KV) CanDeposit(ctx context.Context, volume string) error {
	if err := pathPart("volume", volume); err != nil {
		return err
	}
	probe := kv.dataPath(kv.rel(volume, "atrest-can-deposit"))
	step := kv.cl.checkCapabilities(ctx, map[string][]string{probe: {"create"}}, nil)
	if step.Err != nil {
		return fmt.Errorf("escrow %s: %w", kv.cfg.Mount, step.Err)
	}
	return nil
}

func (kv *KV) create(ctx context.Context, op string, rel string, s *secret.Key) error {
	if s.Len() == 0 {
		return fmt.Errorf("%w: %s: no secret (nil or wiped)", kms.ErrInvalidRequest, op)
	}
	if kv.cfg.Encoding == "raw" && !plainText(s.Bytes()) {
		return fmt.Errorf("%w: %s: encoding raw stores printable text only; use base64 for binary secrets", kms.ErrInvalidRequest, op)
	}
	if kv.cfg.Version == 1 {
		// KV v1 has no check-and-set: look first (vaultlocker-style
		// locations need read access anyway).
		if _, err := kv.cl.do(ctx, call{op: op, method: http.MethodGet, path: kv.dataPath(rel), notFound: kms.ErrSecretNotFound}); err == nil {
			return &Error{Op: op, Kind: kms.ErrSecretExists, Reason: kv.cfg.Mount + "/" + rel + " already holds a secret"}
		} else if !errors.Is(err, kms.ErrSecretNotFound) {
			return err
		}
	}
	body := kv.body(s.Bytes())
	defer clear(body)
	_, err := kv.cl.do(ctx, call{op: op, method: http.MethodPut, path: kv.dataPath(rel), body: body})
	var ve *Error
	if errors.As(err, &ve) {
		switch {
		case ve.Status == http.StatusBadRequest && strings.Contains(strings.Join(ve.Messages, " "), "check-and-set"):
			ve.Kind, ve.Reason = kms.ErrSecretExists, kv.cfg.Mount+"/"+rel+" already holds a secret"
			ve.Messages = nil
			if ve.Attempts > 1 {
				// The write is create-only (cas 0), so a retry never
				// stores a second version; but an earlier attempt that
				// was cut off (a leader lost mid-request) may be the
				// one that stored it.
				ve.Reason += " (possibly this very secret: an earlier attempt of this write got no answer)"
			}
		case ve.Status == http.StatusForbidden:
			ve.Reason += " (writing " + kv.cfg.Mount + "/" + rel + "; with a create-only policy this also means a secret is already there)"
		}
	}
	return err
}

// plainText reports whether b can be stored and read back as a raw JSON
// string without escapes.
func plainText(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// body encodes the write request: {"options":{"cas":0},"data":{field:v}}
// for KV v2, {field:v} for v1.
func (kv *KV) body(secretBytes []byte) []byte {
	w := newJSONBuf(64 + stringLen([]byte(kv.cfg.Field)) + max(stringLen(secretBytes), base64.StdEncoding.EncodedLen(len(secretBytes))+2))
	if kv.cfg.Version == 2 {
		w.raw(`{"options":{"cas":0},"data":`)
	}
	w.raw("{").str([]byte(kv.cfg.Field)).raw(":")
	if kv.cfg.Encoding == "raw" {
		w.str(secretBytes)
	} else {
		w.base64(secretBytes)
	}
	w.raw("}")
	if kv.cfg.Version == 2 {
		w.raw("}")
	}
	return w.bytes()
}
