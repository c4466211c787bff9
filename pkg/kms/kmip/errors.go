package kmip

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/atrest/atrest/pkg/kms"
)

// Error is a failed KMIP operation. It wraps the kms sentinel in Kind and
// says why in Reason; it never holds a secret.
type Error struct {
	// Op is what atrest was doing, e.g. "decrypt".
	Op string
	// Kind is the kms sentinel this failure is.
	Kind error
	// Reason is the cause: "connection refused", "timeout", or the
	// server's result reason and message.
	Reason string
	// Attempts is how many requests were made; Elapsed how long it took.
	Attempts int
	Elapsed  time.Duration
}

func (e *Error) Error() string {
	s := fmt.Sprintf("kmip %s: %v: %s", e.Op, e.Kind, e.Reason)
	if e.Attempts > 1 {
		s += fmt.Sprintf(" (%d attempts in %s)", e.Attempts, e.Elapsed.Round(time.Millisecond))
	}
	return s
}

// Unwrap returns the kms sentinel.
func (e *Error) Unwrap() error { return e.Kind }

func classifyTransport(err error, step string) *transportError {
	f := &transportError{kind: nil, transient: true}
	var uaErr x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invErr x509.CertificateInvalidError
	var certErr *tls.CertificateVerificationError
	var alert tls.AlertError
	var recErr tls.RecordHeaderError
	var opErr *net.OpError
	switch {
	case errors.As(err, &uaErr), errors.As(err, &hostErr), errors.As(err, &invErr), errors.As(err, &certErr):
		f.kind, f.transient = kms.ErrConfig, false
		f.reason = "tls: the server certificate is not trusted: " + certReason(err) + " (check ca_file and server_name)"
	case errors.As(err, &alert) || (errors.As(err, &opErr) && opErr.Op == "remote error"):
		// The server aborted the handshake: it refused our certificate.
		f.kind, f.transient = kms.ErrAuth, false
		f.reason = "tls: the server refused the client certificate (" + lastCause(err) + "); check cert_file, key_file and the key manager's client CA"
	case errors.As(err, &recErr):
		f.kind, f.transient = kms.ErrConfig, false
		f.reason = "tls: the server did not answer TLS (is the address a KMIP port?)"
	case isTimeout(err):
		f.reason = "timeout (" + step + ")"
	case errors.Is(err, syscall.ECONNREFUSED):
		f.reason = "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		f.reason = "connection closed by the server (" + step + ")"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		f.reason = "network unreachable"
	default:
		f.reason = "network error (" + step + "): " + lastCause(err)
	}
	if f.kind == nil {
		f.kind = kms.ErrUnavailable
	}
	return f
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func certReason(err error) string {
	var uaErr x509.UnknownAuthorityError
	if errors.As(err, &uaErr) {
		return "signed by an unknown authority"
	}
	var hostErr x509.HostnameError
	if errors.As(err, &hostErr) {
		return "not valid for " + hostErr.Host
	}
	return lastCause(err)
}

func lastCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return strings.ReplaceAll(err.Error(), "\n", " ")
		}
		err = next
	}
}

// resultError classifies a batch item that did not succeed. op says which
// operation, since the same reason means different things: a Decrypt that
// fails cryptographically was given a ciphertext that is not the key's
// (another volume's, or tampered).
func resultError(op uint32, r *result) error {
	kind := kms.ErrUnavailable
	switch r.reason {
	case reasonItemNotFound:
		kind = kms.ErrKeyNotFound
	case reasonAuthentication:
		kind = kms.ErrAuth
	case reasonPermissionDenied:
		kind = kms.ErrPermissionDenied
	case reasonInvalidField, reasonInvalidMessage, reasonOperationNotSupp, reasonIllegalOperation:
		kind = kms.ErrInvalidRequest
	case reasonCryptoFailure:
		kind = kms.ErrCiphertextRejected
	case reasonGeneralFailure:
		if op == opDecrypt {
			// pykmip-server answers a GCM tag mismatch with General
			// Failure (docs/kmip.md).
			kind = kms.ErrCiphertextRejected
		}
	}
	if op == opDecrypt && r.reason == reasonInvalidField {
		// The server found the ciphertext, nonce or tag unacceptable.
		kind = kms.ErrCiphertextRejected
	}
	return &Error{Op: strings.ToLower(opNames[op]), Kind: kind, Reason: r.describe(), Attempts: 1}
}
