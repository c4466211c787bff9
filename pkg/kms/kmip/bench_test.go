package kmip

import (
	"context"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil/kmiptest"
	"github.com/atrest/atrest/pkg/kms"
)

func benchKEK(b *testing.B) (*Client, []kms.UnwrapRequest) {
	b.Helper()
	s := kmiptest.Start(b)
	cl, err := New(Config{Address: s.Address, ServerName: s.ServerName, CAFile: s.CA.File,
		CertFile: s.Client.CertFile, KeyFile: s.Client.KeyFile, Key: "atrest-bench", Timeout: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	return cl, wrapAll(b, cl.KEK("atrest-bench", true), secrets(b, 64))
}

// BenchmarkUnwrap64Batch is atrestd opening 64 volumes at boot: 64
// Decrypt batch items in one request message.
func BenchmarkUnwrap64Batch(b *testing.B) {
	cl, reqs := benchKEK(b)
	k := cl.KEK("atrest-bench", false)
	for b.Loop() {
		res, err := k.Unwrap(context.Background(), reqs)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
			r.Plaintext.Wipe()
		}
	}
}

// BenchmarkUnwrap64Single is the same 64 volumes, one request message
// (and one TLS connection) each.
func BenchmarkUnwrap64Single(b *testing.B) {
	cl, reqs := benchKEK(b)
	k := cl.KEK("atrest-bench", false)
	for b.Loop() {
		for _, r := range reqs {
			pt, err := kms.Unwrap(context.Background(), k, r.Context, r.Wrapped)
			if err != nil {
				b.Fatal(err)
			}
			pt.Wipe()
		}
	}
}

// BenchmarkRoundTrip is one connection, mutual-TLS handshake and the
// smallest request (DiscoverVersions): the fixed cost every message pays.
func BenchmarkRoundTrip(b *testing.B) {
	cl, _ := benchKEK(b)
	for b.Loop() {
		if _, err := cl.DiscoverVersions(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
