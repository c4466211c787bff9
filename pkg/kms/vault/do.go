package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/atrest/atrest/pkg/kms"
)

// maxBody bounds what atrest reads of a response: a batch of 10,000
// rewrapped ciphertexts is about 1.5 MB.
const maxBody = 64 << 20

// call is one Vault API operation.
type call struct {
	op     string // for messages, e.g. "transit decrypt"
	method string // http.MethodGet, MethodPut or MethodDelete
	path   string // without /v1/
	body   []byte // JSON; the caller clears it if it holds a secret
	// anon sends no token (logins); token sends this one instead of the
	// Client's (unwrapping a response-wrapped secret_id).
	anon  bool
	token string
	// params are query parameters (GET only).
	params map[string][]string
	// notFound is the sentinel for HTTP 404; kms.ErrKeyNotFound if nil.
	notFound error
	// badRequest is the sentinel for HTTP 400; kms.ErrInvalidRequest if nil.
	badRequest error
	// once: the call changes Vault's state each time it runs (a key
	// rotation), so it is not sent again after a failure in which Vault
	// may have executed it (a timeout or reset after sending, a 5xx).
	once bool
}

// reply is a completed HTTP exchange. Its body belongs to the caller, who
// clears it when it held a secret.
type reply struct {
	status int
	body   []byte
}

// do runs c with the retry policy: transient failures (network errors,
// timeouts, 5xx, sealed, 429) are retried until the deadline. A node
// that fails at the transport level, is sealed or answers 5xx is left
// for the next address at once (see nodes.go); when every address failed
// in a round, the client waits a jittered exponential backoff, or for a
// 429 what Vault's Retry-After / X-Ratelimit-Reset says (plus jitter),
// and starts a new round. A leader election (a standby that knows no
// reachable active node, or the node in use dying under the request) is
// waited out once, until a node reports itself active (election.go) or
// for at most Config.ElectionWait, before the one retry to that node;
// should the retry find the cluster electing again, the wait repeats
// for at most 1-2 s each time. A call marked once is not sent again after a
// failure in which Vault may have executed it (a failed connection or TLS
// handshake is not one: the request never went out). A 403 triggers one check
// of the token and, if Vault no longer accepts it, one fresh login;
// anything else fails at once. On a non-transient HTTP error the reply
// is returned too, so that batch callers can read per-item results from
// a 400.
func (cl *Client) do(ctx context.Context, c call) (*reply, error) {
	start := time.Now()
	ctx, cancel := cl.withDeadline(ctx)
	defer cancel()
	reauthed := false
	waitedElection := false
	cutAt := -1 // the node whose connection broke under this call
	prev := -1  // the node of the last failed attempt
	var last failure
	r := cl.newRound()
	for attempt := 1; ; attempt++ {
		var gen uint64
		if !c.anon && c.token == "" {
			var err error
			if gen, err = cl.ensureToken(ctx); err != nil {
				return nil, err
			}
		}
		i := cl.pick(r, false)
		if prev >= 0 && i != prev {
			cl.failovers.Add(1)
		}
		rep, f, ok := cl.attempt(ctx, c, cl.nodes[i])
		prev = i
		if ok {
			cl.nodes[i].markUp()
			cl.pref.Store(int32(i))
			return rep, nil
		}
		if f.status == http.StatusForbidden && !c.anon && c.token == "" && !reauthed {
			reauthed = true
			if !cl.tokenAccepted(ctx) {
				if err := cl.relogin(ctx, gen); err != nil {
					return nil, err
				}
				attempt--
				continue
			}
		}
		if f.status == http.StatusNotFound && c.notFound != nil {
			f.kind = c.notFound
		}
		if f.status == http.StatusBadRequest && c.badRequest != nil {
			f.kind = c.badRequest
		}
		if f.maybeSent && c.once {
			f.reason += " (not retried: Vault may have executed it; check before running it again)"
			return rep, cl.fail(c, f, attempt, start)
		}
		if !f.transient {
			return rep, cl.fail(c, f, attempt, start)
		}
		if f.atDeadline && last.kind != nil {
			// The operation's deadline cut this attempt short; what the
			// earlier attempts saw (sealed, refused, ...) says more.
			last.reason += ", giving up at the deadline"
			return nil, cl.fail(c, last, attempt, start)
		}
		r.tried[i], r.reasons[i] = true, f.reason
		r.election = r.election || f.election
		resend := false // to the same node, after cutPause
		switch {
		case f.cut && cutAt < 0:
			// The connection broke under the sent request: a keep-alive
			// connection the node closed, or the node died. Asking the
			// same node again after a moment (a killed process takes
			// that long to close its port) on a fresh connection tells
			// them apart: it answers, or its port refuses (no request).
			cutAt, resend = i, true
		case (f.unreached || f.cut) && cutAt == i:
			// The node died under the request (its port refuses, or a
			// dying process accepted and dropped the connection). It
			// may have been the active node: then every standby is in
			// an election and asking one now would only hear so. Wait
			// for the election (below) before the one retry on another
			// node.
			cl.nodes[i].markDown(false)
			r.election = true
		case f.status == http.StatusTemporaryRedirect:
			// The standby names the active node it cannot reach: if
			// that is one of ours and not known dead, ask it next;
			// otherwise the others know no more, wait for the election.
			r.next = cl.nodeAt(f.location)
			if r.next >= 0 && !r.tried[r.next] && !cl.nodes[r.next].down() {
				cl.hops.Add(1)
				cl.redirects.Add(1)
				r.named = r.next
				last = f
				continue
			}
			r.next = -1
		case f.nodeDown && i == r.named:
			// The active node a standby named is down: the cluster is
			// electing, and the other standbys know no more. Wait.
			cl.nodes[i].markDown(f.alive)
			r.election = true
		case f.nodeDown:
			cl.nodes[i].markDown(f.alive)
			if cl.pick(r, true) >= 0 {
				// Another address that is up has not been tried in
				// this round.
				cl.hops.Add(1)
				last = f
				continue
			}
		}
		if sum := cl.summary(r); sum != "" {
			f.reason = sum
		}
		last = f
		wait := cl.cfg.Backoff.wait(attempt - 1)
		election := false
		switch {
		case f.status == http.StatusTooManyRequests:
			cl.rateLimited.Add(1)
			wait = rateLimitWait(f.retryAfter, wait)
		case resend:
			wait = cutPause + rand.N(cutPause)
		case r.election && !waitedElection:
			// Once per operation, the wait for a whole election, so
			// that its one retry finds the new active node: until a
			// node reports itself active (election.go), at most
			// ElectionWait.
			waitedElection, election = true, true
			cl.elections.Add(1)
			wait = cl.cfg.ElectionWait + rand.N(cl.cfg.ElectionWait/5+1)
		case r.election:
			// The retry found the cluster electing again (or the
			// wait ended without an active node): one request more.
			election = true
			cl.elecPolls.Add(1)
			wait = electionPoll + rand.N(electionPoll)
		}
		dl, hasDL := ctx.Deadline()
		if hasDL && time.Until(dl) < wait && !election {
			last.reason += ", giving up at the deadline"
			return nil, cl.fail(c, last, attempt, start)
		}
		cl.retries.Add(1)
		why := c.op + ": " + f.reason
		cl.lastRetry.Store(&why)
		clear(r.tried) // a new round; what each node said stays for the error
		r.election, r.next, r.named = false, -1, -1
		if resend {
			r.next = i
		}
		if election {
			// An election may end before the deadline: probe until
			// then rather than give up now.
			t0 := time.Now()
			active := cl.awaitLeader(ctx, wait)
			cl.backoff.Add(int64(time.Since(t0)))
			if err := ctx.Err(); err != nil {
				return nil, cl.stopped(ctx, c, last, attempt, start)
			}
			r.next = active
			continue
		}
		cl.backoff.Add(int64(wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, cl.stopped(ctx, c, last, attempt, start)
		case <-t.C:
		}
	}
}

// stopped is the error of an operation whose context ended while it
// waited before a retry: the caller's cancellation, or the deadline
// with what the attempts saw.
func (cl *Client) stopped(ctx context.Context, c call, last failure, attempts int, start time.Time) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("vault %s: %w", c.op, ctx.Err())
	}
	last.reason += ", giving up at the deadline"
	return cl.fail(c, last, attempts, start)
}

// cutPause is the pause (up to twice as long) before a request whose
// connection broke is sent again to the same node.
const cutPause = 100 * time.Millisecond

// rateLimitWait is the pause after a 429: what Vault asked for, or the
// backoff if that is longer (so a client never loops tightly on a
// header of 0), plus up to as much again at random, so the nodes a
// quota turned away do not all come back in the same instant.
func rateLimitWait(asked, backoff time.Duration) time.Duration {
	d := max(asked, backoff)
	return d + rand.N(d+1)
}

// retryAfter reads how long Vault asks a rate-limited client to wait:
// Retry-After (seconds or an HTTP date, sent while a quota's
// block_interval holds) or X-Ratelimit-Reset (seconds until the quota's
// bucket refills, with enable_rate_limit_response_headers).
func retryAfter(h http.Header, now time.Time) time.Duration {
	if v := h.Get("Retry-After"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			return time.Duration(n) * time.Second
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(0, t.Sub(now))
		}
	}
	if n, err := strconv.Atoi(h.Get("X-Ratelimit-Reset")); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	return 0
}

func (cl *Client) fail(c call, f failure, attempts int, start time.Time) error {
	return &Error{
		Op: c.op, Kind: f.kind, Reason: f.reason, Status: f.status,
		Messages: f.messages, Attempts: attempts, Elapsed: time.Since(start),
	}
}

// attempt makes one request to node n within the per-call timeout.
func (cl *Client) attempt(ctx context.Context, c call, n *node) (*reply, failure, bool) {
	// The request went out only if it got a connection (GotConn, for
	// HTTP/1.1 and HTTP/2 alike); connected is set by the dialer once
	// its TCP connection is up (warm.go).
	var gotConn, connected atomic.Bool
	actx, cancel := context.WithTimeout(context.WithValue(ctx, connectedKey{}, &connected), cl.cfg.Timeout)
	defer cancel()
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { gotConn.Store(true) }})
	t0 := time.Now()
	var resp *http.Response
	err := n.acquire(actx)
	unreached, handshake := false, false
	if err == nil {
		resp, err = cl.send(actx, c, n)
		defer n.release()
		// A connection that was never made, or whose TLS handshake did
		// not complete, carried no request: Vault ran nothing, the
		// counters keep them apart.
		noConn := err != nil && !gotConn.Load()
		unreached = err != nil && (isDial(err) || noConn && !connected.Load())
		handshake = noConn && !unreached
		switch {
		case unreached:
			cl.unreached.Add(1)
		case handshake:
			cl.handshakes.Add(1)
		default:
			cl.count(c.op)
		}
	}
	if resp == nil {
		if err == nil {
			err = errors.New("no response")
		}
		if actx.Err() != nil && !errors.Is(ctx.Err(), context.Canceled) {
			reason := fmt.Sprintf("timeout: no response within %s", time.Since(t0).Round(100*time.Millisecond))
			if ctx.Err() != nil {
				// The caller's deadline, not the per-call timeout, cut
				// the call short (possibly before it started).
				reason = "timeout: no response before the deadline"
			}
			return nil, failure{kind: kms.ErrUnavailable, transient: true, atDeadline: ctx.Err() != nil, reason: reason, nodeDown: true, maybeSent: !unreached && !handshake, unreached: unreached, handshake: handshake, alive: !unreached}, false
		}
		f := classifyTransport(err)
		f.unreached, f.handshake = unreached, handshake
		f.maybeSent = f.maybeSent && !unreached && !handshake
		f.alive = f.alive && !unreached // a connect timeout: dead
		return nil, f, false
	}
	defer resp.Body.Close()
	body, rerr := readBody(resp.Body, resp.ContentLength)
	if rerr != nil {
		return nil, classifyTransport(rerr), false
	}
	rep := &reply{status: resp.StatusCode, body: body}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return rep, failure{}, true
	}
	var apiErr struct {
		Errors []string `json:"errors"`
	}
	_ = json.Unmarshal(body, &apiErr)
	msgs := make([]string, 0, len(apiErr.Errors))
	for _, m := range apiErr.Errors {
		if m = oneLine(m); m != "" {
			msgs = append(msgs, m)
		}
	}
	f := classifyStatus(resp.StatusCode, msgs)
	if resp.StatusCode == http.StatusTemporaryRedirect {
		f.location = resp.Header.Get("Location")
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		f.retryAfter = retryAfter(resp.Header, time.Now())
	}
	return rep, f, false
}

// send issues the HTTP request of c to node n, as Vault's API takes it:
// the path under /v1/, a PUT with the JSON body for a write, the token
// (the Client's, c's own, or none for c.anon) and the namespace in their
// headers. Any status is a response; only a transport failure is an
// error. Redirects are not followed (New's CheckRedirect).
func (cl *Client) send(ctx context.Context, c call, n *node) (*http.Response, error) {
	u := n.base + c.path
	if len(c.params) > 0 {
		u += "?" + url.Values(c.params).Encode()
	}
	method, body := c.method, io.Reader(nil)
	switch method {
	case http.MethodGet, http.MethodDelete:
	default:
		method, body = http.MethodPut, bytes.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Vault-Request", "true")
	if ns := cl.cfg.Namespace; ns != "" {
		req.Header.Set("X-Vault-Namespace", ns)
	}
	token := c.token
	if token == "" && !c.anon {
		if p := cl.sent.Load(); p != nil {
			token = *p
		}
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	return cl.hc.Do(req)
}

// readBody reads a response body of at most maxBody bytes into one array,
// sized from Content-Length when Vault sent one. Responses carry tokens,
// secret_ids and decrypted plaintexts, so every array the body outgrows is
// cleared, and so is the body on a read error (io.ReadAll would leave each
// outgrown array behind, uncleared).
func readBody(r io.Reader, length int64) ([]byte, error) {
	n := 512
	if length >= 0 && length < maxBody {
		n = int(length) + 1 // room for the read that reports EOF
	}
	w := newJSONBuf(n)
	for {
		if len(w.b) == cap(w.b) {
			w.reserve(cap(w.b))
		}
		m, err := r.Read(w.b[len(w.b):min(cap(w.b), maxBody)])
		w.b = w.b[:len(w.b)+m]
		if err == io.EOF || len(w.b) >= maxBody {
			return w.b, nil
		}
		if err != nil {
			clear(w.b)
			return nil, err
		}
	}
}

// decode parses a successful reply's JSON into out. It unmarshals the body
// in place: a json.Decoder would copy all of it into a buffer of its own.
func decode(rep *reply, op string, out any) error {
	if err := json.Unmarshal(rep.body, out); err != nil {
		return fmt.Errorf("vault %s: unexpected response (HTTP %d): %w", op, rep.status, err)
	}
	return nil
}
