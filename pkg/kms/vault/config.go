package vault

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/atrest/atrest/pkg/kms"
)

// Config says how to reach and log in to Vault. The config-file loader
// (pkg/config) fills it; WithEnv overlays the usual VAULT_* variables.
type Config struct {
	// Address is Vault's URL, e.g. https://vault.example:8200 (VAULT_ADDR).
	Address string `json:"address"`
	// Addresses are the URLs of a Vault cluster's nodes (active and
	// standbys, or a load balancer and the nodes behind it), tried in
	// turn: a node that is down or sealed costs one attempt, then the
	// next is asked at once (nodes.go). Address, if set too, comes first.
	// VAULT_ADDR replaces both.
	Addresses []string `json:"addresses,omitempty"`
	// MaxConcurrency bounds this client's requests in flight to each
	// address; default 4.
	MaxConcurrency int `json:"max_concurrency,omitempty"`
	// Namespace is the Vault Enterprise namespace, sent on every request
	// (VAULT_NAMESPACE); empty for the root namespace.
	Namespace string `json:"namespace,omitempty"`
	// CACert is a PEM file of the CA(s) to trust for Vault's certificate
	// (VAULT_CACERT); empty means the system's roots.
	CACert string `json:"ca_cert,omitempty"`
	// TLSServerName overrides the name checked in Vault's certificate
	// (VAULT_TLS_SERVER_NAME).
	TLSServerName string `json:"tls_server_name,omitempty"`
	// Auth says how to obtain a token.
	Auth Auth `json:"auth"`
	// Timeout bounds each HTTP request (VAULT_CLIENT_TIMEOUT); default 10s.
	Timeout time.Duration `json:"timeout,omitempty"`
	// Deadline bounds a whole operation, retries included; default 30s.
	// A deadline on the caller's context applies too; the earlier wins.
	Deadline time.Duration `json:"deadline,omitempty"`
	// Backoff paces retries of transient failures.
	Backoff Backoff `json:"backoff"`
	// ElectionWait bounds the wait of an operation that finds no
	// active node (a leader election) before its one retry; default
	// 15s. The wait ends as soon as a node reports itself active
	// (election.go), so it is the election's own time; ElectionWait
	// matters only when no node says so (a client that cannot reach
	// the active node the others still name): set it above the
	// cluster's longest election (docs/fleet.md measures it).
	ElectionWait time.Duration `json:"election_wait,omitempty"`
}

// Auth selects and configures the login method.
type Auth struct {
	// Method is "token" (the default) or "approle".
	Method string `json:"method,omitempty"`
	// TokenFile holds a token (root-only file). It is read again when
	// Vault rejects the current token, so a token rotated by Vault Agent
	// or an operator is picked up.
	TokenFile string `json:"token_file,omitempty"`
	// Token is a token given through VAULT_TOKEN. It never comes from a
	// config file: put tokens in TokenFile.
	Token string `json:"-"`
	// AppRole configures Method "approle".
	AppRole AppRole `json:"approle"`
}

// AppRole is the AppRole login: role_id plus a secret_id from a root-only
// file, which may hold a response-wrapping token instead of the secret_id.
type AppRole struct {
	// Mount is where the approle method is enabled; default "approle".
	Mount string `json:"mount,omitempty"`
	// RoleID is the role's role_id (not a secret on its own).
	RoleID string `json:"role_id,omitempty"`
	// RoleIDFile holds the role_id instead of RoleID.
	RoleIDFile string `json:"role_id_file,omitempty"`
	// SecretIDFile is the root-only file holding the secret_id.
	SecretIDFile string `json:"secret_id_file"`
	// SecretIDWrapped says the file may hold a response-wrapping token
	// for the secret_id. On first use atrest checks that the wrapping
	// token was made by this AppRole mount's secret-id endpoint, unwraps
	// it and replaces the file's content with the secret_id (0600), since
	// the wrapping token works only once.
	SecretIDWrapped bool `json:"secret_id_wrapped,omitempty"`
}

// Backoff paces retries: the n-th wait is drawn uniformly between half and
// all of min(Max, Initial·2ⁿ) (jittered exponential backoff).
type Backoff struct {
	// Initial is the first wait; default 250ms.
	Initial time.Duration `json:"initial,omitempty"`
	// Max caps a single wait; default 5s.
	Max time.Duration `json:"max,omitempty"`
}

// Defaults.
const (
	DefaultTimeout  = 10 * time.Second
	DefaultDeadline = 30 * time.Second
	DefaultInitial  = 250 * time.Millisecond
	DefaultMaxWait  = 5 * time.Second
	// DefaultElectionWait is Config.ElectionWait's default: above an
	// election of a Raft cluster with Vault's default
	// performance_multiplier (5: 5-10 s before a follower stands,
	// then the new active node's set-up).
	DefaultElectionWait = 15 * time.Second
	DefaultAppRole      = "approle"
	// DefaultMaxConcurrency is Config.MaxConcurrency's default: atrestd
	// sends one batch per unlock, a few at most during a rewrap.
	DefaultMaxConcurrency = 4
)

// connectTimeout bounds a TCP connect (below Timeout), so that an
// address that black-holes packets costs seconds before the next one is
// tried.
const connectTimeout = 3 * time.Second

// WithEnv returns c overlaid with the VAULT_* environment variables that
// are set (getenv is os.Getenv in production): an environment value
// overrides the file's, as with the vault CLI. VAULT_TOKEN, when set (or
// taken out of the environment by TakeEnvToken), selects token login
// unless the config asks for AppRole.
func (c Config) WithEnv(getenv func(string) string) (Config, error) {
	set := func(dst *string, name string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	if v := getenv("VAULT_ADDR"); v != "" {
		// As with the vault CLI, the environment wins over the file:
		// VAULT_ADDR names the one server to use.
		c.Address, c.Addresses = v, nil
	}
	set(&c.Namespace, "VAULT_NAMESPACE")
	set(&c.CACert, "VAULT_CACERT")
	set(&c.TLSServerName, "VAULT_TLS_SERVER_NAME")
	set(&c.Auth.Token, EnvToken)
	if c.Auth.Token == "" {
		// main moved VAULT_TOKEN out of the environment (TakeEnvToken).
		c.Auth.Token = takenEnvToken()
	}
	if v := getenv("VAULT_CLIENT_TIMEOUT"); v != "" {
		d, err := parseDuration(v)
		if err != nil {
			return c, fmt.Errorf("%w: VAULT_CLIENT_TIMEOUT=%q: %w", kms.ErrConfig, v, err)
		}
		c.Timeout = d
	}
	return c, nil
}

// parseDuration accepts Go durations ("10s") and plain seconds ("10"),
// as the vault CLI does.
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(s)
}

// withDefaults fills unset fields and validates c.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, a ...any) (Config, error) {
		return c, fmt.Errorf("%w: vault: %s", kms.ErrConfig, fmt.Sprintf(format, a...))
	}
	all := c.Addresses
	if c.Address != "" {
		all = append([]string{c.Address}, c.Addresses...)
	}
	if len(all) == 0 {
		return bad("no address (set address, addresses or VAULT_ADDR)")
	}
	c.Addresses = nil
	for _, a := range all {
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return bad("address %q is not an http(s) URL", a)
		}
		a = strings.TrimSuffix(a, "/")
		if slices.Contains(c.Addresses, a) {
			return bad("address %q is listed twice", a)
		}
		c.Addresses = append(c.Addresses, a)
	}
	c.Address = c.Addresses[0]
	if c.MaxConcurrency < 0 {
		return bad("max_concurrency %d must be positive", c.MaxConcurrency)
	}
	if c.MaxConcurrency == 0 {
		c.MaxConcurrency = DefaultMaxConcurrency
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Deadline <= 0 {
		c.Deadline = DefaultDeadline
	}
	if c.ElectionWait <= 0 {
		c.ElectionWait = DefaultElectionWait
	}
	if c.Backoff.Initial <= 0 {
		c.Backoff.Initial = DefaultInitial
	}
	if c.Backoff.Max <= 0 {
		c.Backoff.Max = DefaultMaxWait
	}
	c.Namespace = strings.Trim(c.Namespace, "/")
	switch c.Auth.Method {
	case "", "token":
		c.Auth.Method = "token"
		if c.Auth.Token == "" && c.Auth.TokenFile == "" {
			return bad("token auth needs token_file or VAULT_TOKEN")
		}
	case "approle":
		a := &c.Auth.AppRole
		if a.Mount == "" {
			a.Mount = DefaultAppRole
		}
		a.Mount = strings.Trim(a.Mount, "/")
		if a.RoleID == "" && a.RoleIDFile == "" {
			return bad("approle auth needs role_id or role_id_file")
		}
		if a.SecretIDFile == "" {
			return bad("approle auth needs secret_id_file")
		}
	default:
		return bad("unknown auth method %q (want token or approle)", c.Auth.Method)
	}
	return c, nil
}
