package storm

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
)

// Wire records what a pass put on the wire, from the client's side
// (net/http's trace hooks, which both clients' requests carry in their
// context): the TLS handshakes and what they negotiated, the connections
// and the HTTP protocol on them. The storm and the plain client must
// differ only in the client code, not in what Vault is asked to do: a
// different key exchange (X25519MLKEM768 costs the server an ML-KEM
// encapsulation), no HTTP/2, a resumed session or a second connection
// per node would make the comparison one of wire formats.
type Wire struct {
	mu         sync.Mutex
	Handshakes int            // TLS handshakes completed
	Resumed    int            // of which resumed a session
	TLS        map[string]int // "TLS 1.3 X25519MLKEM768" -> handshakes
	Conns      int            // connections a request got
	Reused     int            // of which already open
	Protocols  map[string]int // ALPN ("h2", "http/1.1") -> connections a request got
}

// Trace returns ctx with w's hooks: every request made with it is
// recorded.
func (w *Wire) Trace(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			proto := "http/1.1 (no TLS)"
			if tc, ok := i.Conn.(*tls.Conn); ok {
				if proto = tc.ConnectionState().NegotiatedProtocol; proto == "" {
					proto = "http/1.1"
				}
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			w.Conns++
			if i.Reused {
				w.Reused++
			}
			count(&w.Protocols, proto)
		},
		TLSHandshakeDone: func(s tls.ConnectionState, err error) {
			if err != nil {
				return
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			w.Handshakes++
			if s.DidResume {
				w.Resumed++
			}
			count(&w.TLS, tls.VersionName(s.Version)+" "+s.CurveID.String())
		},
	})
}

func count(m *map[string]int, k string) {
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[k]++
}

// Negotiated is what the handshakes and connections agreed on, in a
// form two passes can be compared by.
func (w *Wire) Negotiated() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	keys := func(m map[string]int) string {
		var k []string
		for x := range m {
			k = append(k, x)
		}
		slices.Sort(k)
		return strings.Join(k, ", ")
	}
	return fmt.Sprintf("%s, %s", keys(w.TLS), keys(w.Protocols))
}

func (w *Wire) String() string {
	w.mu.Lock()
	h, r, c, u := w.Handshakes, w.Resumed, w.Conns, w.Reused
	w.mu.Unlock()
	return fmt.Sprintf("%d TLS handshakes (%d resumed), %s; requests on %d connections, %d of them reused", h, r, w.Negotiated(), c, u)
}
