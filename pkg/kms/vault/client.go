// Package vault is atrest's HashiCorp Vault backend: Transit as a kms.KEK
// (derived keys with the volume UUID as context, batch_input for every
// operation), KV version 2 (and 1, for vaultlocker's layout) as a
// kms.SecretStore and kms.Escrow, token and AppRole login with renewal, and
// retries of transient failures within a deadline.
//
// A Client holds the connection and the login; Transit and KV use one.
// Nothing here contacts Vault before the first operation, so a Client can
// be built at boot before the network is up.
package vault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/vault/api"
)

// Client is a connection to Vault with its login. It is safe for
// concurrent use; logins are serialised.
type Client struct {
	cfg  Config
	api  *api.Client // carries the current token
	anon *api.Client // never carries a token: logins, wrapping lookups
	auth authenticator
	hc   *http.Client // api's and anon's: one connection pool

	mu  sync.Mutex // guards tok and serialises logins
	tok tokenState

	logins   atomic.Int64
	renewals atomic.Int64
	retries  atomic.Int64
}

// tokenState is what atrest knows about its current token.
type tokenState struct {
	value     string
	gen       uint64        // bumped by every login
	ttl       time.Duration // remaining at obtained; 0 = does not expire
	issued    time.Duration // the TTL at login, which renewals ask for again
	renewable bool
	obtained  time.Time
}

func (t tokenState) expiresAt() time.Time {
	if t.ttl <= 0 {
		return time.Time{}
	}
	return t.obtained.Add(t.ttl)
}

// usable reports whether the token is set and not about to expire (within
// a tenth of its TTL, at most a second).
func (t tokenState) usable(now time.Time) bool {
	if t.value == "" {
		return false
	}
	exp := t.expiresAt()
	return exp.IsZero() || now.Add(min(time.Second, t.ttl/10)).Before(exp)
}

// Stats counts a Client's logins, token renewals and retried requests
// (for atrestd's metrics, and for tests that must see them happen).
type Stats struct {
	Logins   int64 `json:"logins"`
	Renewals int64 `json:"renewals"`
	Retries  int64 `json:"retries"`
}

// New validates cfg and prepares a Client. It reads the CA file but does
// not contact Vault.
func New(cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLSServerName}
	if cfg.CACert != "" {
		pem, err := os.ReadFile(cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("%w: vault.ca_file: %w", kms.ErrConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: vault.ca_file %s holds no PEM certificate", kms.ErrConfig, cfg.CACert)
		}
		tlsConf.RootCAs = pool
	}
	tr := cleanhttp.DefaultPooledTransport()
	tr.TLSClientConfig = tlsConf
	tr.ForceAttemptHTTP2 = true
	hc := &http.Client{Transport: tr}
	c := &Client{cfg: cfg, hc: hc}
	if c.api, err = newAPI(cfg, hc); err != nil {
		return nil, err
	}
	if c.anon, err = newAPI(cfg, hc); err != nil {
		return nil, err
	}
	switch cfg.Auth.Method {
	case "approle":
		c.auth = &appRoleAuth{cfg: cfg.Auth.AppRole}
	default:
		c.auth = &tokenAuth{file: cfg.Auth.TokenFile, env: cfg.Auth.Token}
	}
	return c, nil
}

// newAPI makes an api.Client that ignores the process environment (the
// api package reads VAULT_TOKEN and VAULT_NAMESPACE by itself; atrest's
// Config already decided about both).
// Both share one HTTP client, so one connection pool.
func newAPI(cfg Config, hc *http.Client) (*api.Client, error) {
	a, err := api.NewClient(&api.Config{
		Address:    cfg.Address,
		HttpClient: hc,
		MaxRetries: 0, // atrest retries itself, transient failures only
		// No api-level timeout: its raw calls cancel their context when
		// they return, before a large body is read. atrest bounds each
		// request, body included, with its own context instead.
		Timeout: 0,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: vault: %w", kms.ErrConfig, err)
	}
	a.ClearToken()
	a.ClearNamespace()
	if cfg.Namespace != "" {
		a.SetNamespace(cfg.Namespace)
	}
	return a, nil
}

// Address is the Vault server's URL.
func (c *Client) Address() string { return c.cfg.Address }

// Stats returns the login and renewal counters.
func (c *Client) Stats() Stats {
	return Stats{Logins: c.logins.Load(), Renewals: c.renewals.Load(), Retries: c.retries.Load()}
}

// Close closes the Client's idle connections to Vault (and with them
// their goroutines). A long-running process that replaces its Client
// (atrestd on SIGHUP) closes the old one once nothing uses it any more; a
// request made after Close would open a connection again.
func (c *Client) Close() {
	c.hc.CloseIdleConnections()
}

// withDeadline bounds an operation by the configured total deadline.
func (c *Client) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.Deadline)
}
