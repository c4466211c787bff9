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
}

func newRelay(t *testing.T, vaultAddr string) *relay {
	t.Helper()
	u, err := url.Parse(vaultAddr)
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{}
	r.addr = serveLoopback(t, func(c net.Conn) []net.Conn {
		r.accepted.Add(1)
		up, err := net.Dial("tcp", u.Host)
		if err != nil {
			c.Close()
			return nil
		}
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
		return []net.Conn{c, up}
	})
	return r
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
// as a plain client's does, counted as a request that reached the node
// (alive, retried later), not as a refused connection.
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
		if st.Unreached != 0 || st.Requests == 0 {
			t.Errorf("warm %v: counters %+v, want requests that reached the node and no refused connection", warm, st)
		}
	}
}
