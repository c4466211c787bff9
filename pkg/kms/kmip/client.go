// Package kmip is atrest's KMIP backend: server-side AES-256-GCM
// Encrypt and Decrypt in an enterprise key manager or HSM, over mutual
// TLS, with the volume UUID as additional authenticated data, so that a
// wrapped secret is bound to its volume and the key-encryption key never
// leaves the key manager. Several volumes travel as batch items of one
// request message: N volumes cost one round trip.
//
// The TTLV codec is in the ttlv sub-package; this package speaks the
// KMIP 1.4 operations atrest needs (DiscoverVersions, Create, Activate,
// Locate, GetAttributes, Encrypt, Decrypt, Revoke, Destroy) and maps
// their results onto pkg/kms's sentinels. docs/kmip.md is the operator's
// side.
package kmip

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/internal/backoff"
	"github.com/atrest/atrest/pkg/kms/kmip/ttlv"
)

// Protocol version atrest speaks: 1.4 is the first with authenticated
// encryption data and tags on Encrypt and Decrypt.
const (
	protoMajor = 1
	protoMinor = 4
)

// Client talks to one KMIP server. It opens a connection per request
// message, so it holds no connection state and is safe for concurrent use.
type Client struct {
	cfg     Config
	tls     *tls.Config
	retries atomic.Int64
}

// New checks cfg and reads the TLS files (nothing is sent yet).
func New(cfg Config) (*Client, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, tls: tc}, nil
}

// Retries counts the retries of transient failures so far (metrics).
func (cl *Client) Retries() int64 { return cl.retries.Load() }

// request is one batch item to send.
type request struct {
	op      uint32
	payload []ttlv.Item
}

// result is one batch item of a response. payload points into the
// response buffer, valid only inside the callback that received it.
type result struct {
	op      uint32
	status  uint32
	reason  uint32
	message string
	payload *ttlv.Item
}

func (r *result) ok() bool { return r.status == resultSuccess }

func (r *result) describe() string {
	s := fmt.Sprintf("result reason %s", reasonName(r.reason))
	if r.message != "" {
		s += ": " + r.message
	}
	return s
}

func reasonName(r uint32) string {
	switch r {
	case reasonItemNotFound:
		return "Item Not Found"
	case reasonResponseTooLarge:
		return "Response Too Large"
	case reasonAuthentication:
		return "Authentication Not Successful"
	case reasonInvalidMessage:
		return "Invalid Message"
	case reasonOperationNotSupp:
		return "Operation Not Supported"
	case reasonInvalidField:
		return "Invalid Field"
	case reasonCryptoFailure:
		return "Cryptographic Failure"
	case reasonIllegalOperation:
		return "Illegal Operation"
	case reasonPermissionDenied:
		return "Permission Denied"
	case reasonObjectArchived:
		return "Object Archived"
	case reasonGeneralFailure:
		return "General Failure"
	}
	return fmt.Sprintf("0x%x", r)
}

// message builds a Request Message. Batch items carry their index as the
// Unique Batch Item ID; a failing item does not stop the others
// (Batch Error Continuation Option Continue).
func message(reqs []request) ttlv.Item {
	header := ttlv.Struct(tagRequestHeader,
		ttlv.Struct(tagProtocolVersion, ttlv.Int32(tagProtocolVersionMajor, protoMajor), ttlv.Int32(tagProtocolVersionMinor, protoMinor)),
		ttlv.Int32(tagMaximumResponseSize, maxResponse),
		ttlv.Enum(tagBatchErrorContinue, batchContinue),
		ttlv.Int32(tagBatchCount, int32(len(reqs))),
	)
	items := []ttlv.Item{header}
	for i, r := range reqs {
		bi := ttlv.Struct(tagBatchItem, ttlv.Enum(tagOperation, r.op))
		if len(reqs) > 1 {
			bi.Items = append(bi.Items, ttlv.Bytes(tagUniqueBatchItemID, batchID(i)))
		}
		bi.Items = append(bi.Items, ttlv.Struct(tagRequestPayload, r.payload...))
		items = append(items, bi)
	}
	return ttlv.Struct(tagRequestMessage, items...)
}

func batchID(i int) []byte { return []byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)} }

// parse checks a Response Message against the requests and returns one
// result per request, in request order.
func parse(resp ttlv.Item, reqs []request) ([]result, error) {
	if resp.Tag != tagResponseMessage || resp.Type != ttlv.Structure {
		return nil, &protocolError{"not a Response Message"}
	}
	items := resp.All(tagBatchItem)
	if len(items) != len(reqs) {
		return nil, &protocolError{fmt.Sprintf("%d batch items for %d requests", len(items), len(reqs))}
	}
	out := make([]result, len(reqs))
	seen := make([]bool, len(reqs))
	for k, bi := range items {
		i := k
		if len(reqs) > 1 {
			id, err := bi.BytesOf(tagUniqueBatchItemID)
			if err != nil || len(id) != 4 {
				return nil, &protocolError{"batch item without its Unique Batch Item ID"}
			}
			i = int(id[0])<<24 | int(id[1])<<16 | int(id[2])<<8 | int(id[3])
			if i < 0 || i >= len(reqs) || seen[i] {
				return nil, &protocolError{"batch item with an unknown or repeated Unique Batch Item ID"}
			}
		}
		seen[i] = true
		st, err := bi.EnumOf(tagResultStatus)
		if err != nil {
			return nil, &protocolError{err.Error()}
		}
		r := result{op: reqs[i].op, status: st}
		if op, err := bi.EnumOf(tagOperation); err == nil && op != reqs[i].op {
			return nil, &protocolError{fmt.Sprintf("answer to operation 0x%x for a %s request", op, opNames[reqs[i].op])}
		}
		if c, ok := bi.Find(tagResultReason); ok && c.Type == ttlv.Enumeration {
			r.reason = uint32(c.Int)
		}
		if c, ok := bi.Find(tagResultMessage); ok && c.Type == ttlv.TextString {
			r.message = oneLine(string(c.Bytes))
		}
		if c, ok := bi.Find(tagResponsePayload); ok && c.Type == ttlv.Structure {
			r.payload = c
		}
		if r.ok() && r.payload == nil && reqs[i].op != opActivate && reqs[i].op != opRevoke && reqs[i].op != opDestroy {
			return nil, &protocolError{"successful " + opNames[reqs[i].op] + " without a payload"}
		}
		if r.payload == nil {
			r.payload = &ttlv.Item{Type: ttlv.Structure}
		}
		out[i] = r
	}
	return out, nil
}

// oneLine keeps a server's message printable and short.
func oneLine(s string) string {
	b := []rune{}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		b = append(b, r)
		if len(b) >= 200 {
			b = append(b, '…')
			break
		}
	}
	return string(b)
}

// do sends reqs as one message with the retry policy: transient failures
// (refused, reset, timeout) are retried with jittered exponential backoff
// until the deadline; anything else fails at once. use gets one result per
// request and must not keep payload bytes past its return.
func (cl *Client) do(ctx context.Context, op string, reqs []request, use func([]result) error) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cl.cfg.Deadline)
	defer cancel()
	sensitive := false
	for _, r := range reqs {
		sensitive = sensitive || r.op == opEncrypt || r.op == opDecrypt
	}
	var last *transportError
	for attempt := 1; ; attempt++ {
		err := cl.exchange(ctx, message(reqs), sensitive, func(resp ttlv.Item) error {
			res, err := parse(resp, reqs)
			if err != nil {
				return err
			}
			return use(res)
		})
		var te *transportError
		var pe *protocolError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &pe):
			return &Error{Op: op, Kind: kms.ErrUnavailable, Reason: pe.Error(), Attempts: attempt, Elapsed: time.Since(start)}
		case errors.As(err, &te):
		default:
			return err
		}
		if !te.transient {
			return &Error{Op: op, Kind: te.kind, Reason: te.reason, Attempts: attempt, Elapsed: time.Since(start)}
		}
		if last == nil || !te.atDeadline {
			last = te
		}
		wait := cl.cfg.Backoff.wait(attempt - 1)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait || ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.Canceled) {
				return fmt.Errorf("kmip %s: %w", op, ctx.Err())
			}
			return &Error{Op: op, Kind: kms.ErrUnavailable, Reason: last.reason + ", giving up at the deadline", Attempts: attempt, Elapsed: time.Since(start)}
		}
		cl.retries.Add(1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

func (b Backoff) wait(n int) time.Duration { return backoff.Wait(b.Initial, b.Max, n) }
