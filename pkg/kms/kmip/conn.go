package kmip

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/kmip/ttlv"
	"github.com/atrest/atrest/pkg/secret"
)

// maxResponse bounds a response message: 256 decrypted secrets of a few
// hundred bytes each fit many times over. A server announcing more is
// refused before anything is allocated.
const maxResponse = 4 << 20

// exchange sends one request message over a fresh mutual-TLS connection
// and reads one response, all within the per-call timeout. When sensitive
// (the messages carry plaintexts: Encrypt's request, Decrypt's response)
// both live in locked memory; use reads the decoded response, whose byte
// strings point into that memory, before it is wiped.
func (cl *Client) exchange(ctx context.Context, req ttlv.Item, sensitive bool, use func(resp ttlv.Item) error) error {
	actx, cancel := context.WithTimeout(ctx, cl.cfg.Timeout)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: cl.tls}
	raw, err := d.DialContext(actx, "tcp", cl.cfg.Address)
	if err != nil {
		return cl.transportErr(actx, ctx, err, "connect")
	}
	conn := raw.(*tls.Conn)
	defer conn.Close()
	if dl, ok := actx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// A cancelled caller closes the connection at once.
	stop := context.AfterFunc(actx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	out, release, err := buffer(req.Len(), sensitive)
	if err != nil {
		return err
	}
	defer release()
	if err := req.EncodeTo(out); err != nil {
		return err
	}
	if _, err := conn.Write(out); err != nil {
		return cl.transportErr(actx, ctx, err, "send")
	}
	var head [8]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		return cl.transportErr(actx, ctx, err, "read the response")
	}
	tag, typ, total, err := ttlv.Header(head[:], maxResponse)
	if err != nil {
		return &protocolError{fmt.Sprintf("response header: %v", err)}
	}
	if tag != tagResponseMessage || typ != ttlv.Structure {
		return &protocolError{fmt.Sprintf("response is tag 0x%06x type %s, not a Response Message", uint32(tag), typ)}
	}
	if binary.BigEndian.Uint32(head[4:])%8 != 0 {
		return &protocolError{"response length is not a multiple of 8"}
	}
	in, releaseIn, err := buffer(total, sensitive)
	if err != nil {
		return err
	}
	defer releaseIn()
	copy(in, head[:])
	if _, err := io.ReadFull(conn, in[8:]); err != nil {
		return cl.transportErr(actx, ctx, err, "read the response")
	}
	resp, err := ttlv.Decode(in)
	if err != nil {
		return &protocolError{err.Error()}
	}
	return use(resp)
}

// buffer returns n bytes, in locked memory when sensitive, and the
// function that releases (and wipes) them.
func buffer(n int, sensitive bool) ([]byte, func(), error) {
	if !sensitive {
		return make([]byte, n), func() {}, nil
	}
	k, err := secret.New(n)
	if err != nil {
		return nil, nil, err
	}
	return k.Bytes(), k.Wipe, nil
}

// transportError is a failure to talk to the server at all.
type transportError struct {
	reason    string
	transient bool
	kind      error
	// atDeadline: the operation's deadline, not the per-call timeout,
	// cut this attempt short.
	atDeadline bool
}

func (e *transportError) Error() string { return e.reason }

// protocolError is a response that is not valid KMIP.
type protocolError struct{ reason string }

func (e *protocolError) Error() string { return "malformed response from the server: " + e.reason }

func (cl *Client) transportErr(actx, ctx context.Context, err error, step string) error {
	if actx.Err() != nil && ctx.Err() == nil {
		return &transportError{reason: fmt.Sprintf("timeout: no answer within the per-call timeout of %s (%s)", cl.cfg.Timeout, step), transient: true, kind: kms.ErrUnavailable}
	}
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return ctx.Err()
		}
		return &transportError{reason: "timeout: no answer before the deadline (" + step + ")", transient: true, atDeadline: true, kind: kms.ErrUnavailable}
	}
	return classifyTransport(err, step)
}
