package vault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/atrest/atrest/pkg/kms"
)

// Error is a failed Vault operation. It wraps one of kms's sentinels
// (errors.Is(err, kms.ErrUnavailable) and so on) and says what happened in
// terms an operator can act on. It never holds a secret or a token.
type Error struct {
	// Op is what atrest was doing, e.g. "transit decrypt".
	Op string
	// Kind is the kms sentinel this failure is.
	Kind error
	// Reason is the specific cause: "connection refused", "timeout",
	// "vault is sealed", "rate limited (HTTP 429)", "HTTP 403" and so on.
	Reason string
	// Status is the HTTP status, or 0 when no response came.
	Status int
	// Messages are Vault's own error strings, if it sent any.
	Messages []string
	// Attempts is how many requests were made; Elapsed how long it took.
	Attempts int
	Elapsed  time.Duration
}

// Error says what failed, why, and after how many attempts.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "vault %s: %v: %s", e.Op, e.Kind, e.Reason)
	if len(e.Messages) > 0 {
		fmt.Fprintf(&b, ": %s", strings.Join(e.Messages, "; "))
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (%d attempts in %s)", e.Attempts, e.Elapsed.Round(time.Millisecond))
	}
	return b.String()
}

// Unwrap returns the kms sentinel.
func (e *Error) Unwrap() error { return e.Kind }

// failure classifies one attempt that did not succeed.
type failure struct {
	kind      error
	reason    string
	status    int
	messages  []string
	transient bool
	// atDeadline: the attempt ran out of time because the whole
	// operation's deadline passed, not its own timeout.
	atDeadline bool
	// nodeDown: this address failed as a whole (unreachable, sealed,
	// 5xx such as a standby without an active node); another address
	// may answer.
	nodeDown bool
	// maybeSent: the request may have reached Vault and run there (a
	// timeout or reset after sending, a 5xx), so an operation that is
	// not idempotent must not be sent again.
	maybeSent bool
	// unreached: no connection was made (refused, unreachable, connect
	// timeout), so no request reached Vault.
	unreached bool
	// alive: the node answered 5xx (not sealed), or accepted the
	// connection and did not answer in time: it is down only briefly.
	alive bool
	// cut: the connection broke after the request was sent (reset,
	// unexpected EOF), or during its TLS handshake: the node closed it
	// or died.
	cut bool
	// handshake: the node accepted the connection but the TLS handshake
	// did not complete (cut, timed out): no request was sent, so even
	// an operation that is not idempotent may be sent again.
	handshake bool
	// retryAfter is what a 429 asked for (Retry-After,
	// X-Ratelimit-Reset).
	retryAfter time.Duration
	// election: a standby knows no active node, or cannot reach it.
	election bool
	// location is where a 307 points.
	location string
}

// classifyTransport classifies an error that came without an HTTP
// response: the request never completed.
func classifyTransport(err error) failure {
	f := failure{kind: kms.ErrUnavailable, transient: true, nodeDown: true, maybeSent: true}
	var uaErr x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invErr x509.CertificateInvalidError
	var recErr tls.RecordHeaderError
	var certErr *tls.CertificateVerificationError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &uaErr), errors.As(err, &hostErr), errors.As(err, &invErr), errors.As(err, &certErr):
		f.kind, f.transient = kms.ErrConfig, false
		f.reason = "tls: " + tlsReason(err) + " (check vault.ca_file / VAULT_CACERT and the address's host name)"
	case errors.As(err, &recErr):
		f.kind, f.transient = kms.ErrConfig, false
		f.reason = "tls: the server did not answer TLS (http:// address for an https server, or the reverse?)"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		f.reason, f.alive = "timeout", true
	case errors.Is(err, syscall.ECONNREFUSED):
		f.reason, f.maybeSent = "connection refused", false
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		f.reason, f.cut = "connection reset", true
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		f.reason, f.maybeSent = "network unreachable", false
	case errors.As(err, &dnsErr):
		f.reason, f.maybeSent = "cannot resolve host "+dnsErr.Name, false
	default:
		f.reason = "network error: " + oneLine(lastCause(err))
	}
	return f
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func tlsReason(err error) string {
	var uaErr x509.UnknownAuthorityError
	if errors.As(err, &uaErr) {
		return "certificate signed by an unknown authority"
	}
	var hostErr x509.HostnameError
	if errors.As(err, &hostErr) {
		return "certificate is not valid for " + hostErr.Host
	}
	return "certificate rejected: " + oneLine(lastCause(err))
}

// lastCause is the innermost error's text: url.Error and friends repeat
// the URL, which says nothing the Op does not.
func lastCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// isDial reports whether err is a failure to connect (refused,
// unreachable, connect timeout, DNS): no request was sent.
func isDial(err error) bool {
	var op *net.OpError
	var dnsErr *net.DNSError
	return (errors.As(err, &op) && op.Op == "dial") || errors.As(err, &dnsErr)
}

// electionPoll paces the retries of an operation that already waited
// Config.ElectionWait once and still finds no active node: 1 to 2 s,
// not growing (the election is late; an exponential backoff would leave
// the nodes asleep for seconds after the new leader is up).
const electionPoll = time.Second

// classifyStatus classifies an HTTP error status with Vault's messages.
func classifyStatus(status int, messages []string) failure {
	f := failure{status: status, messages: messages}
	joined := strings.ToLower(strings.Join(messages, " "))
	switch {
	case status == 503 && strings.Contains(joined, "sealed"):
		f.kind, f.reason, f.transient, f.nodeDown = kms.ErrUnavailable, "vault is sealed (HTTP 503)", true, true
		f.messages = nil
	case status == 429:
		f.kind, f.reason, f.transient = kms.ErrUnavailable, "rate limited (HTTP 429)", true
	case status == 412:
		f.kind, f.reason, f.transient = kms.ErrUnavailable, "not yet replicated (HTTP 412)", true
	case status == http.StatusTemporaryRedirect:
		// A standby that could not forward to the active node: another
		// address may be the new active node (or the one answering
		// when forwarding is turned off); else wait for the election.
		f.kind, f.reason, f.transient = kms.ErrUnavailable, "standby cannot reach the active node, leader election under way? (HTTP 307)", true
		f.election = true
	case status >= 500 && (strings.Contains(joined, "active cluster node not found") || strings.Contains(joined, "no active vault instance")):
		// A standby during a leader election: the other nodes know no
		// more, so the client backs off instead of asking them too.
		f.kind, f.reason, f.transient = kms.ErrUnavailable, fmt.Sprintf("no active node, leader election under way? (HTTP %d)", status), true
		f.election = true
	case status >= 500:
		f.kind, f.reason, f.transient = kms.ErrUnavailable, fmt.Sprintf("server error (HTTP %d)", status), true
		f.nodeDown, f.maybeSent, f.alive = true, true, true
	case status == 401:
		f.kind, f.reason = kms.ErrAuth, "HTTP 401"
	case status == 403:
		f.kind, f.reason = kms.ErrPermissionDenied, "HTTP 403"
	case status == 404:
		f.kind, f.reason = kms.ErrKeyNotFound, "HTTP 404"
	default:
		f.kind, f.reason = kms.ErrInvalidRequest, fmt.Sprintf("HTTP %d", status)
	}
	return f
}

// oneLine flattens Vault's multi-line error texts ("1 error occurred:\n\t* ...").
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, "error occurred:"); i >= 0 {
		s = s[i+len("error occurred:"):]
	}
	s = strings.NewReplacer("\n", " ", "\t", " ", "* ", "").Replace(s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
