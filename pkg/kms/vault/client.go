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
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/hashicorp/go-cleanhttp"
)

// Client is a connection to Vault with its login. It is safe for
// concurrent use; logins are serialised.
type Client struct {
	cfg   Config
	nodes []*node      // one per address, see nodes.go
	pref  atomic.Int32 // the node that answered last
	auth  authenticator
	hc    *http.Client // every node's: one connection pool
	dial  *dialer      // its connections (warm.go)
	proxy func(*http.Request) (*url.URL, error)

	mu  sync.Mutex // guards tok and serialises logins
	tok tokenState
	// sent is the token requests carry (tok.value, or nil: none), read
	// without mu by every request.
	sent atomic.Pointer[string]

	logins      atomic.Int64
	renewals    atomic.Int64
	retries     atomic.Int64
	requests    atomic.Int64
	failovers   atomic.Int64
	rateLimited atomic.Int64
	unreached   atomic.Int64
	handshakes  atomic.Int64 // TLS handshakes that did not complete
	elections   atomic.Int64
	elecPolls   atomic.Int64
	hops        atomic.Int64
	probes      atomic.Int64
	redirects   atomic.Int64
	backoff     atomic.Int64 // nanoseconds waited before retries
	lastRetry   atomic.Pointer[string]
	byOp        sync.Map // op -> *atomic.Int64: requests per kind
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

// Stats counts a Client's logins, token renewals, HTTP requests and
// what went wrong with them (for atrestd's metrics, the boot-storm
// figures, and tests that must see them happen).
type Stats struct {
	Logins   int64 `json:"logins"`
	Renewals int64 `json:"renewals"`
	// Retries are requests sent again after a backoff wait, or at once
	// to the same node after its connection broke under a request or
	// during its TLS handshake.
	Retries int64 `json:"retries"`
	// Requests are every HTTP request sent to Vault, logins included;
	// ByOp splits them by kind ("approle login", "transit decrypt",
	// "token lookup-self", ...).
	Requests int64            `json:"requests"`
	ByOp     map[string]int64 `json:"by_op,omitempty"`
	// Unreached are attempts that made no connection (refused,
	// unreachable, connect timeout): no request reached Vault.
	Unreached int64 `json:"unreached"`
	// HandshakeFailures are attempts whose connection was made but
	// whose TLS handshake did not complete (cut by the node, timed
	// out): no request reached Vault's API, so they are not in
	// Requests either, and an operation that is not idempotent is sent
	// again after one. An overloaded node cuts handshakes it could not
	// finish within its own deadline (Vault's is 10 s).
	HandshakeFailures int64 `json:"handshake_failures"`
	// ElectionWaits are operations that found no active node (a
	// standby's 307 or 500, or the node in use dying under a request)
	// and waited, until a node reported itself active or for at most
	// Config.ElectionWait, before their retry.
	ElectionWaits int64 `json:"election_waits"`
	// ElectionPolls are retries of such an operation that found the
	// election still under way after its wait (no node reported itself
	// active within ElectionWait, or the retry met an election again),
	// each after another wait of at most 1-2 s: one request more each.
	ElectionPolls int64 `json:"election_polls"`
	// Probes are the unauthenticated sys/health questions asked during
	// those waits (election.go), one node every 200-400 ms: not
	// counted in Requests (no token, not audited, nothing written).
	Probes int64 `json:"probes"`
	// Hops are requests sent at once to another node in the same round:
	// after a standby's 307 naming the active node (a standby that does
	// not forward yet, just after an election) or a node that answered
	// as down (sealed, 5xx, no answer in time). One request more each.
	Hops int64 `json:"hops"`
	// Redirects are the hops after a standby's 307 (one request more
	// each: the standby's answer). A standby answers so when it cannot
	// forward: just after an election, until it has connected to the
	// new active node.
	Redirects int64 `json:"redirects"`
	// Failovers are requests sent to another address after one failed
	// (dead, sealed, or without an active node), at once or after a
	// wait.
	Failovers int64 `json:"failovers"`
	// RateLimited are HTTP 429 answers (a rate-limit quota).
	RateLimited int64 `json:"rate_limited"`
	// Backoff is the total time waited before retries.
	Backoff time.Duration `json:"backoff_ns"`
	// LastRetry is why the latest retry was needed: the operation and
	// what its failed attempt met ("approle login: connection reset"),
	// with no secret in it; "" before any retry.
	LastRetry string `json:"last_retry,omitempty"`
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
	// A node that is down but not refusing (a black-holed address) costs
	// at most the connect timeout before the next address is tried.
	d := &dialer{tcp: &net.Dialer{Timeout: min(cfg.Timeout, connectTimeout), KeepAlive: 30 * time.Second}, tls: tlsConf}
	tr.DialContext = d.tcp.DialContext // the TCP connection to a proxy
	tr.DialTLSContext = d.dialTLS      // TLS to Vault itself, maybe warm
	tr.ForceAttemptHTTP2 = true
	hc := &http.Client{Transport: tr,
		// net/http follows a 307 by itself, which would take a request
		// to the dead active node a standby names: see DisableRedirects.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c := &Client{cfg: cfg, hc: hc, dial: d, proxy: tr.Proxy, nodes: newNodes(cfg)}
	switch cfg.Auth.Method {
	case "approle":
		c.auth = &appRoleAuth{cfg: cfg.Auth.AppRole}
	default:
		c.auth = &tokenAuth{file: cfg.Auth.TokenFile, env: cfg.Auth.Token}
	}
	return c, nil
}

// Address is the Vault server's URL: the first of Addresses.
func (c *Client) Address() string { return c.cfg.Addresses[0] }

// Addresses are every Vault node's URL the client uses.
func (c *Client) Addresses() []string { return append([]string(nil), c.cfg.Addresses...) }

// Stats returns the counters.
func (c *Client) Stats() Stats {
	st := Stats{
		Logins: c.logins.Load(), Renewals: c.renewals.Load(), Retries: c.retries.Load(),
		Requests: c.requests.Load(), Failovers: c.failovers.Load(), RateLimited: c.rateLimited.Load(),
		Unreached: c.unreached.Load(), HandshakeFailures: c.handshakes.Load(), ElectionWaits: c.elections.Load(), ElectionPolls: c.elecPolls.Load(),
		Hops: c.hops.Load(), Redirects: c.redirects.Load(), Probes: c.probes.Load(),
		Backoff: time.Duration(c.backoff.Load()),
	}
	if p := c.lastRetry.Load(); p != nil {
		st.LastRetry = *p
	}
	c.byOp.Range(func(k, v any) bool {
		if st.ByOp == nil {
			st.ByOp = map[string]int64{}
		}
		st.ByOp[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return st
}

// count counts one request of kind op.
func (c *Client) count(op string) {
	c.requests.Add(1)
	v, ok := c.byOp.Load(op)
	if !ok {
		v, _ = c.byOp.LoadOrStore(op, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}

// Close closes the Client's idle connections to Vault (and with them
// their goroutines). A long-running process that replaces its Client
// (atrestd on SIGHUP) closes the old one once nothing uses it any more; a
// request made after Close would open a connection again.
func (c *Client) Close() {
	c.hc.CloseIdleConnections()
	c.dial.close()
}

// withDeadline bounds an operation by the configured total deadline.
func (c *Client) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.Deadline)
}
