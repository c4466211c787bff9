package kms_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/local"
	"github.com/atrest/atrest/pkg/secret"
)

func TestCiphertextVersion(t *testing.T) {
	for _, tc := range []struct {
		ct   string
		want int
	}{
		{"vault:v1:abc", 1},
		{"vault:v37:abc=", 37},
		{"vault:v0:abc", 0},
		{"vault:v01:abc", 0},
		{"vault:v-1:abc", 0},
		{"vault:vx:abc", 0},
		{"vault:v3", 0},
		{"local:v3:abc", 0},
		{"", 0},
	} {
		got, err := kms.CiphertextVersion("vault", tc.ct)
		if got != tc.want || (tc.want == 0) != (err != nil) {
			t.Errorf("CiphertextVersion(%q) = %d, %v; want %d", tc.ct, got, err, tc.want)
		}
		if err != nil && !errors.Is(err, kms.ErrCiphertextRejected) {
			t.Errorf("CiphertextVersion(%q): %v is not ErrCiphertextRejected", tc.ct, err)
		}
	}
}

func newKey(t *testing.T) *secret.Key {
	t.Helper()
	k, err := secret.Random(32)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

func TestRegistryRoutesMixedBatches(t *testing.T) {
	ctx := context.Background()
	a, err := local.Open(filepath.Join(t.TempDir(), "a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := local.Open(filepath.Join(t.TempDir(), "b"))
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := local.Open(filepath.Join(t.TempDir(), "c"))
	if err != nil {
		t.Fatal(err)
	}
	reg := kms.NewRegistry(a, b)
	if got, err := reg.Lookup("local", a.Key()); err != nil || got != kms.KEK(a) {
		t.Fatalf("Lookup = %v, %v", got, err)
	}
	if len(reg.KEKs()) != 2 {
		t.Errorf("KEKs() = %d entries", len(reg.KEKs()))
	}
	keks := []kms.KEK{a, b, stranger, b, a}
	pts := make([]*secret.Key, len(keks))
	reqs := make([]kms.UnwrapRequest, len(keks))
	for i, k := range keks {
		pts[i] = newKey(t)
		vol := "vol-" + string(rune('a'+i))
		w, err := kms.Wrap(ctx, k, vol, pts[i])
		if err != nil {
			t.Fatal(err)
		}
		reqs[i] = kms.UnwrapRequest{Context: vol, Wrapped: w}
	}
	res := reg.Unwrap(ctx, reqs)
	for i, r := range res {
		if i == 2 {
			if !errors.Is(r.Err, kms.ErrUnknownBackend) {
				t.Errorf("token of an unregistered keystore: %v, want ErrUnknownBackend", r.Err)
			}
			continue
		}
		if r.Err != nil || !r.Plaintext.Equal(pts[i]) {
			t.Errorf("item %d: %v (wrong KEK or order?)", i, r.Err)
		}
		r.Plaintext.Wipe()
	}
	if _, err := b.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	rw := reg.Rewrap(ctx, reqs)
	for i, r := range rw {
		switch {
		case i == 2:
			if !errors.Is(r.Err, kms.ErrUnknownBackend) {
				t.Errorf("rewrap of an unregistered token: %v", r.Err)
			}
		case r.Err != nil:
			t.Errorf("rewrap item %d: %v", i, r.Err)
		case keks[i] == kms.KEK(b) && r.Wrapped.KeyVersion != 2:
			t.Errorf("item %d rewrapped to v%d, want b's new v2", i, r.Wrapped.KeyVersion)
		case keks[i] == kms.KEK(a) && r.Wrapped.KeyVersion != 1:
			t.Errorf("item %d rewrapped to v%d, want a's v1", i, r.Wrapped.KeyVersion)
		}
	}
}

func TestCheckRequests(t *testing.T) {
	if err := kms.CheckRequests([]kms.WrapRequest{{Context: "", Plaintext: newKey(t)}}); !errors.Is(err, kms.ErrInvalidRequest) {
		t.Errorf("empty context: %v", err)
	}
	if err := kms.CheckRequests([]kms.WrapRequest{{Context: "v", Plaintext: nil}}); !errors.Is(err, kms.ErrInvalidRequest) {
		t.Errorf("nil plaintext: %v", err)
	}
	if !kms.Transient(errors.Join(errors.New("x"), kms.ErrUnavailable)) || kms.Transient(kms.ErrAuth) {
		t.Error("Transient misclassifies")
	}
}
