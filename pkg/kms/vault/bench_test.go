package vault_test

import (
	"fmt"
	"testing"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/kms"
)

// wrappedBatch wraps n random secrets with distinct volume contexts.
func wrappedBatch(b *testing.B, k kms.KEK, n int) []kms.UnwrapRequest {
	b.Helper()
	reqs := make([]kms.WrapRequest, n)
	for i := range reqs {
		reqs[i] = kms.WrapRequest{Context: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Plaintext: random(b, 32)}
	}
	res, err := k.Wrap(ctx(b), reqs)
	if err != nil {
		b.Fatal(err)
	}
	out := make([]kms.UnwrapRequest, n)
	for i, r := range res {
		if r.Err != nil {
			b.Fatal(r.Err)
		}
		out[i] = kms.UnwrapRequest{Context: reqs[i].Context, Wrapped: r.Wrapped}
	}
	return out
}

// BenchmarkUnwrap64Batch is atrestd opening 64 volumes at boot: one
// request (target ≤ 150 ms against a local Vault).
func BenchmarkUnwrap64Batch(b *testing.B) {
	tr, _ := nodeTransit(b, vaulttest.Shared(b))
	reqs := wrappedBatch(b, tr, 64)
	for b.Loop() {
		res, err := tr.Unwrap(ctx(b), reqs)
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

// BenchmarkUnwrap64Single is the same 64 volumes one request each, for
// comparison with the batch.
func BenchmarkUnwrap64Single(b *testing.B) {
	tr, _ := nodeTransit(b, vaulttest.Shared(b))
	reqs := wrappedBatch(b, tr, 64)
	for b.Loop() {
		for _, r := range reqs {
			pt, err := kms.Unwrap(ctx(b), tr, r.Context, r.Wrapped)
			if err != nil {
				b.Fatal(err)
			}
			pt.Wipe()
		}
	}
}

// BenchmarkTransitRewrap1000 is the Transit part of `atrest rewrap --all`
// on a node with 1,000 tokens after a key rotation: the one batch rewrap
// call alone, no unwrap to verify, no header or backup written. The whole
// rewrap is BenchmarkRewrap in pkg/volume.
func BenchmarkTransitRewrap1000(b *testing.B) {
	s := vaulttest.Shared(b)
	tr, n := nodeTransit(b, s)
	reqs := wrappedBatch(b, tr, 1000)
	if _, err := adminTransit(b, s, n.Key).Rotate(ctx(b)); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		res, err := tr.Rewrap(ctx(b), reqs)
		if err != nil {
			b.Fatal(err)
		}
		if res[999].Err != nil || res[999].Wrapped.KeyVersion != 2 {
			b.Fatalf("rewrap: %+v", res[999])
		}
	}
}
