package kmip

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil/kmiptest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/kmip/ttlv"
)

// token is a wrapped secret the failure tests try to unwrap.
var token = kms.Wrapped{Backend: Backend, Key: "atrest-node1", KeyVersion: 1,
	Ciphertext: "kmip:v1:MQ:" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}

func unwrapErr(t *testing.T, cfg Config) error {
	t.Helper()
	cl, err := New(cfg)
	if err != nil {
		return err
	}
	_, err = kms.Unwrap(context.Background(), cl.KEK("atrest-node1", false), "vol-0", token)
	return err
}

func config(s *kmiptest.Server, id kmiptest.Identity) Config {
	return Config{Address: s.Address, ServerName: s.ServerName, CAFile: s.CA.File, CertFile: id.CertFile,
		KeyFile: id.KeyFile, Key: "atrest-node1", Timeout: 2 * time.Second, Deadline: 3 * time.Second,
		Backoff: Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}}
}

// Each broken setup fails with its own sentinel and a message that says
// what to fix.
func TestTLSFailures(t *testing.T) {
	s := kmiptest.Start(t)
	foreign := kmiptest.NewCA(t, t.TempDir(), "foreign")

	cfg := config(s, foreign.Client(t, "atrest-node"))
	if err := unwrapErr(t, cfg); !errors.Is(err, kms.ErrAuth) || !strings.Contains(err.Error(), "refused the client certificate") {
		t.Errorf("client certificate of another CA: %v, want ErrAuth", err)
	}
	cfg = config(s, s.Client)
	cfg.CAFile = foreign.File
	if err := unwrapErr(t, cfg); !errors.Is(err, kms.ErrConfig) || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("server certificate of an untrusted CA: %v, want ErrConfig", err)
	}
	cfg = config(s, s.Client)
	cfg.ServerName = "other.test"
	if err := unwrapErr(t, cfg); !errors.Is(err, kms.ErrConfig) || !strings.Contains(err.Error(), "not valid for other.test") {
		t.Errorf("wrong server name: %v, want ErrConfig", err)
	}
	cfg = config(s, s.Client)
	if err := os.Chmod(s.Client.KeyFile, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := unwrapErr(t, cfg); !errors.Is(err, kms.ErrConfig) || !strings.Contains(err.Error(), "not private") {
		t.Errorf("group-readable key file: %v, want ErrConfig", err)
	}
	if err := os.Chmod(s.Client.KeyFile, 0o600); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if err := unwrapErr(t, cfg); !errors.Is(err, kms.ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "giving up at the deadline") {
		t.Errorf("server stopped: %v, want ErrUnavailable after retries", err)
	}
}

// serve runs a TLS listener with the test CA's server certificate whose
// connections handle answers; it needs no pykmip-server.
func serve(t *testing.T, handle func(net.Conn)) (Config, *int) {
	t.Helper()
	dir := t.TempDir()
	ca := kmiptest.NewCA(t, dir, "fake")
	srv := ca.Server(t, "kmip.test")
	pair, err := tls.LoadX509KeyPair(srv.CertFile, srv.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	conns := new(int)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			*conns++
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	id := ca.Client(t, "atrest-node")
	return Config{Address: l.Addr().String(), ServerName: "kmip.test", CAFile: ca.File, CertFile: id.CertFile, KeyFile: id.KeyFile,
		Key: "atrest-node1", Timeout: 300 * time.Millisecond, Deadline: time.Second,
		Backoff: Backoff{Initial: 50 * time.Millisecond, Max: 100 * time.Millisecond}}, conns
}

// A server that accepts and never answers costs at most the deadline, and
// says so.
func TestSilentServer(t *testing.T) {
	cfg, _ := serve(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	err := unwrapErr(t, cfg)
	if !errors.Is(err, kms.ErrUnavailable) || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("silent server: %v, want ErrUnavailable (timeout)", err)
	}
}

// Malformed answers are refused as such, never retried as if transient,
// and a length beyond the limit allocates nothing.
func TestMalformedResponses(t *testing.T) {
	for _, c := range []struct {
		name string
		resp []byte
		want string
	}{
		{"not ttlv", []byte("HTTP/1.1 400 Bad Request\r\n\r\n"), "response header"},
		{"another message", ttlv.Struct(tagRequestMessage).Encode(nil), "not a Response Message"},
		{"huge length", []byte{0x42, 0x00, 0x7B, 0x01, 0xFF, 0xFF, 0xFF, 0xF8}, "at most"},
		{"bad padding", []byte{0x42, 0, 0x7B, 1, 0, 0, 0, 16, 0x42, 0, 0x20, 8, 0, 0, 0, 1, 0xAA, 1, 1, 1, 1, 1, 1, 1}, "padding"},
		{"no batch items", ttlv.Struct(tagResponseMessage, ttlv.Struct(tagResponseHeader)).Encode(nil), "0 batch items for 1 requests"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, conns := serve(t, func(conn net.Conn) {
				var head [8]byte
				if _, err := io.ReadFull(conn, head[:]); err == nil {
					_, _, n, _ := ttlv.Header(head[:], 1<<20)
					_, _ = io.CopyN(io.Discard, conn, int64(n-8))
					_, _ = conn.Write(c.resp)
				}
			})
			err := unwrapErr(t, cfg)
			if !errors.Is(err, kms.ErrUnavailable) || !strings.Contains(err.Error(), "malformed response") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v, want ErrUnavailable: malformed response ... %s", err, c.want)
			}
			if *conns != 1 {
				t.Fatalf("%d connections: a malformed answer was retried", *conns)
			}
		})
	}
}
