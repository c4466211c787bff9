package vault_test

import (
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/vault"
)

// relay is a TCP relay on loopback in front of a real Vault node that
// counts the connections made through it: what a Vault operator sees of
// a client's connections.
type relay struct {
	addr     string
	accepted atomic.Int64
	// cut, if set, is asked for each connection (numbered from 1):
	// true hangs it up after the client's first TLS message, mid-
	// handshake.
	cut func(n int64) bool

	mu      sync.Mutex
	relayed []net.Conn
}

func newRelay(t *testing.T, vaultAddr string) *relay {
	t.Helper()
	u, err := url.Parse(vaultAddr)
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{}
	r.addr = serveLoopback(t, func(c net.Conn) []net.Conn {
		if n := r.accepted.Add(1); r.cut != nil && r.cut(n) {
			_, _ = c.Read(make([]byte, 512))
			c.Close()
			return nil
		}
		up, err := net.Dial("tcp", u.Host)
		if err != nil {
			c.Close()
			return nil
		}
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
		r.mu.Lock()
		r.relayed = append(r.relayed, c, up)
		r.mu.Unlock()
		return []net.Conn{c, up}
	})
	return r
}

// drop closes every connection relayed so far, as a node restarting does.
func (r *relay) drop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.relayed {
		c.Close()
	}
	r.relayed = nil
}

// serveLoopback listens on a free loopback port, hands every connection
// to serve and closes the listener and the connections serve returns when
// the test ends. It returns the listener's address.
func serveLoopback(t *testing.T, serve func(net.Conn) []net.Conn) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			kept := serve(c)
			mu.Lock()
			conns = append(conns, kept...)
			mu.Unlock()
		}
	}()
	return ln.Addr().String()
}

// closedPort is a loopback address nothing listens on: connecting to it
// is refused.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A warmed client connects before its first request, sends nothing until
// then, and its login and Transit calls then go over that one connection:
// the handshake moved earlier, none was added.
func TestWarmConnectionCarriesTheRequests(t *testing.T) {
	t.Parallel()
	s := vaulttest.Shared(t)
	n := provision(t, s, nil)
	r := newRelay(t, s.Address)
	cfg := appRoleConfig(s, n)
	cfg.Address = "https://" + r.addr
	c := newClient(t, cfg)
	defer c.Close()
	c.Warm()
	for deadline := time.Now().Add(30 * time.Second); r.accepted.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("Warm made no connection within 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := c.Stats(); st.Requests != 0 || st.Logins != 0 {
		t.Fatalf("Warm sent requests: %+v", st)
	}
	c.Warm() // a second call while the first connection stands adds none
	tr := newTransit(t, c, n.Key)
	w, err := kms.Wrap(ctx(t), tr, volA, random(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	got, err := kms.Unwrap(ctx(t), tr, volA, w)
	if err != nil {
		t.Fatal(err)
	}
	got.Wipe()
	c.Warm()
	again, err := kms.Unwrap(ctx(t), tr, volA, w)
	if err != nil {
		t.Fatal(err)
	}
	again.Wipe()
	if st := c.Stats(); st.Logins != 1 || st.Requests < 3 {
		t.Errorf("stats %+v, want one login and its Transit calls", st)
	}
	if got := r.accepted.Load(); got != 1 {
		t.Errorf("the warmed client made %d connections, want 1", got)
	}
}

// Warming a dead first address changes nothing a user sees: the request
// still finds the address refusing, fails over to the next one and counts
// it as a client that did not warm does; with no other address it ends in
// the same error.
func TestWarmToADeadNodeChangesNothing(t *testing.T) {
	t.Parallel()
	s := vaulttest.Shared(t)
	n := provision(t, s, nil)
	dead := "https://" + closedPort(t)
	run := func(warm bool, addrs ...string) (vault.Stats, error) {
		cfg := appRoleConfig(s, n)
		cfg.Address, cfg.Addresses = "", addrs
		cfg.Deadline = 3 * time.Second
		cfg.Backoff = vault.Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}
		c := newClient(t, cfg)
		defer c.Close()
		if warm {
			c.Warm()
			time.Sleep(50 * time.Millisecond) // let the warm-up fail first
		}
		_, err := kms.Wrap(ctx(t), newTransit(t, c, n.Key), volA, random(t, 32))
		return c.Stats(), err
	}
	plain, err := run(false, dead, s.Address)
	if err != nil {
		t.Fatal(err)
	}
	warmed, err := run(true, dead, s.Address)
	if err != nil {
		t.Fatalf("warmed client: %v", err)
	}
	if warmed.Unreached != plain.Unreached || warmed.Failovers != plain.Failovers || warmed.Requests != plain.Requests {
		t.Errorf("warmed client's counters %+v differ from a plain client's %+v", warmed, plain)
	}
	if warmed.Unreached != 1 || warmed.Failovers != 1 {
		t.Errorf("counters %+v, want the dead address unreached once and one failover", warmed)
	}
	_, plainErr := run(false, dead)
	_, warmErr := run(true, dead)
	for _, err := range []error{plainErr, warmErr} {
		if !errors.Is(err, kms.ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("got %v, want ErrUnavailable: connection refused", err)
		}
	}
}

// A node that accepts connections and never answers TLS (a hung Vault):
// a warmed client's request waits for the warm handshake and times out
// as a plain client's does, counted as handshakes that did not complete
// (the node is alive, retried later): neither a request Vault could have
// run nor a refused connection.
func TestWarmToAHungNodeTimesOutAsWithout(t *testing.T) {
	t.Parallel()
	s := vaulttest.Shared(t)
	n := provision(t, s, nil)
	hung := serveLoopback(t, func(c net.Conn) []net.Conn { return []net.Conn{c} })
	for _, warm := range []bool{false, true} {
		cfg := appRoleConfig(s, n)
		cfg.Address = "https://" + hung
		cfg.Timeout, cfg.Deadline = 500*time.Millisecond, 1500*time.Millisecond
		cfg.Backoff = vault.Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}
		c := newClient(t, cfg)
		if warm {
			c.Warm()
		}
		_, err := kms.Wrap(ctx(t), newTransit(t, c, n.Key), volA, random(t, 32))
		st := c.Stats()
		c.Close()
		if !errors.Is(err, kms.ErrUnavailable) || !strings.Contains(err.Error(), "timeout") {
			t.Errorf("warm %v: got %v, want ErrUnavailable: timeout", warm, err)
		}
		if st.Unreached != 0 || st.Requests != 0 || st.HandshakeFailures == 0 {
			t.Errorf("warm %v: counters %+v, want failed handshakes only: no request sent, no refused connection", warm, st)
		}
	}
}

// A node that cuts a TLS handshake (as an overloaded Vault does once its
// 10 s handshake deadline passes) ran nothing: a key rotation, which is
// never sent twice once it may have run, is sent again and rotates the
// key once, and the counters show a failed handshake, not a request.
func TestCutHandshakeIsSentAgain(t *testing.T) {
	t.Parallel()
	s := vaulttest.Shared(t)
	n := provision(t, s, nil)
	r := newRelay(t, s.Address)
	r.cut = func(n int64) bool { return n == 2 }
	before, err := adminTransit(t, s, n.Key).Describe(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	tok := s.Token(t, vaultTokenReq("atrest-admin"))
	c := newClient(t, vault.Config{Address: "https://" + r.addr, CACert: s.CAFile, Auth: vault.Auth{TokenFile: tokenFile(t, tok)}})
	defer c.Close()
	tr := newTransit(t, c, n.Key)
	if _, err := tr.Describe(ctx(t)); err != nil { // token and key checked
		t.Fatal(err)
	}
	// The connection closes under the idle client: the rotation needs a
	// new one, whose handshake the relay cuts.
	r.drop()
	time.Sleep(200 * time.Millisecond)
	st0 := c.Stats()
	info, err := tr.Rotate(ctx(t))
	if err != nil {
		t.Fatalf("rotate after a cut handshake: %v", err)
	}
	if info.LatestVersion != before.LatestVersion+1 {
		t.Errorf("key version %d after one rotation from %d: rotated %d times", info.LatestVersion, before.LatestVersion, info.LatestVersion-before.LatestVersion)
	}
	st := c.Stats()
	if st.HandshakeFailures != 1 || st.ByOp["transit rotate"] != 1 || st.Unreached != 0 || st.Requests-st0.Requests != 2 {
		t.Errorf("counters %+v (before the rotation: %+v), want one failed handshake, then the rotation and its key read sent once each", st, st0)
	}
	if !strings.HasPrefix(st.LastRetry, "transit rotate: connection reset") {
		t.Errorf("last retry %q, want the rotation's reset handshake", st.LastRetry)
	}
	if got := r.accepted.Load(); got != 3 {
		t.Errorf("%d connections, want the first, the cut one and another", got)
	}
}
