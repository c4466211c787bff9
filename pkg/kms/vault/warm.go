package vault

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// tlsHandshakeTimeout bounds a TLS handshake, as go-cleanhttp's transport
// bounds its own (the per-call timeout bounds it too).
const tlsHandshakeTimeout = 10 * time.Second

// dialer makes the client's connections: TCP (connectTimeout), then TLS
// with the client's configuration and HTTP/2 offered, as net/http would
// make them itself. It lets Warm make the first one ahead of the first
// request (warm), which the request then takes instead of dialling.
type dialer struct {
	tcp *net.Dialer
	tls *tls.Config

	mu     sync.Mutex
	warm   map[string]*warmConn // by host:port, until a request takes it
	dialed bool                 // a request has asked for a connection
}

// warmConn is one connection Warm started: up closes once TCP is up
// (and connected is set), done when the handshake ended, with conn or
// err.
type warmConn struct {
	up, done  chan struct{}
	connected atomic.Bool
	conn      net.Conn
	err       error
}

// dialTLS is the transport's DialTLSContext: a warm connection to addr if
// Warm made one (or is making it: the request waits for it instead of
// dialling a second time), else a new one. A warm-up that had already
// failed before the request came is not its answer: it dials again.
func (d *dialer) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	w := d.warm[addr]
	delete(d.warm, addr)
	d.dialed = true
	d.mu.Unlock()
	connected, _ := ctx.Value(connectedKey{}).(*atomic.Bool)
	if w != nil {
		select {
		case <-w.done:
			if w.err == nil {
				return w.conn, nil
			}
		default:
			return w.wait(ctx, network, connected)
		}
	}
	return d.handshake(ctx, network, addr, func() {
		if connected != nil {
			connected.Store(true)
		}
	})
}

// connectedKey is the context key of the *atomic.Bool that a request's
// dial sets once its TCP connection is up: when the request then fails
// without a connection to send on, attempt tells a node that never
// connected from a TLS handshake that did not complete.
type connectedKey struct{}

// wait is the answer of a warm handshake still under way, or, when ctx
// ends first, what a dial cut by ctx at the same step returns; connected,
// if not nil, is set once the warm connection's TCP is up.
func (w *warmConn) wait(ctx context.Context, network string, connected *atomic.Bool) (net.Conn, error) {
	for up := w.up; ; up = nil {
		select {
		case <-up: // the first time round only
			if connected != nil {
				connected.Store(true)
			}
			continue
		case <-w.done:
			return w.conn, w.err
		case <-ctx.Done():
		}
		go w.discard()
		if !w.connected.Load() {
			// As a connect cut by ctx reads: nothing reached Vault.
			return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
		}
		return nil, ctx.Err() // as a handshake cut by ctx
	}
}

// handshake connects to addr and makes the TLS handshake, calling
// connected once the TCP connection is up.
func (d *dialer) handshake(ctx context.Context, network, addr string, connected func()) (net.Conn, error) {
	raw, err := d.tcp.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	connected()
	conf := d.tls.Clone()
	if conf.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			raw.Close()
			return nil, err
		}
		conf.ServerName = host
	}
	conf.NextProtos = []string{"h2", "http/1.1"}
	hctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
	defer cancel()
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// start makes a warm connection to addr in the background, unless one is
// there or under way, or a request has made its connection already.
func (d *dialer) start(network, addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dialed || d.warm[addr] != nil {
		return
	}
	if d.warm == nil {
		d.warm = map[string]*warmConn{}
	}
	w := &warmConn{up: make(chan struct{}), done: make(chan struct{})}
	d.warm[addr] = w
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d.tcp.Timeout+tlsHandshakeTimeout)
		defer cancel()
		w.conn, w.err = d.handshake(ctx, network, addr, func() {
			w.connected.Store(true)
			close(w.up)
		})
		close(w.done)
	}()
}

// discard closes a warm connection nobody took, once its handshake ends.
func (w *warmConn) discard() {
	<-w.done
	if w.conn != nil {
		w.conn.Close()
	}
}

// close discards every warm connection no request took.
func (d *dialer) close() {
	d.mu.Lock()
	warm := d.warm
	d.warm = nil
	d.mu.Unlock()
	for _, w := range warm {
		go w.discard()
	}
}

// Warm starts the connection to the Vault node the next request will go
// to (TCP and the TLS handshake) in the background and returns at once,
// so that the handshake overlaps what the caller does before its first
// request: a format's device checks, an unlock's header scan. It sends
// no request (Vault does nothing but the handshake, and no counter
// moves), and a failed connection is not an error here: the request
// dials again and reports what it meets. The request that comes while
// the handshake is under way waits for it rather than dialling a second
// time. Warm does nothing once a request has connected, nor through an
// HTTPS proxy (whose tunnel net/http makes itself); Close closes a warm
// connection no request took.
func (c *Client) Warm() {
	i := c.pick(c.newRound(), true)
	if i < 0 {
		return
	}
	u, err := url.Parse(c.nodes[i].addr)
	if err != nil || u.Scheme != "https" {
		return // plain http:// has no handshake to save
	}
	if c.proxy != nil {
		if p, err := c.proxy(&http.Request{URL: u}); p != nil || err != nil {
			return
		}
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	c.dial.start("tcp", net.JoinHostPort(u.Hostname(), port))
}
