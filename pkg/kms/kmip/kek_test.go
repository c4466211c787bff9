package kmip

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil/kmiptest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/secret"
)

func newKEK(t *testing.T, s *kmiptest.Server, name string, create bool) *KEK {
	t.Helper()
	return clientFor(t, s, s.Client).KEK(name, create)
}

func secrets(t testing.TB, n int) []*secret.Key {
	t.Helper()
	out := make([]*secret.Key, n)
	for i := range out {
		k, err := secret.Random(32)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Wipe)
		out[i] = k
	}
	return out
}

func wrapAll(t testing.TB, k kms.KEK, pts []*secret.Key) []kms.UnwrapRequest {
	t.Helper()
	reqs := make([]kms.WrapRequest, len(pts))
	for i, p := range pts {
		reqs[i] = kms.WrapRequest{Context: fmt.Sprintf("vol-%d", i), Plaintext: p}
	}
	res, err := k.Wrap(context.Background(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]kms.UnwrapRequest, len(res))
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("wrap item %d: %v", i, r.Err)
		}
		out[i] = kms.UnwrapRequest{Context: reqs[i].Context, Wrapped: r.Wrapped}
	}
	return out
}

// The first wrap creates and activates the key; a batch unwraps in one
// message over one connection; another volume's token is rejected by the server (the volume
// UUID is the additional authenticated data) without failing the others.
func TestWrapUnwrapBatch(t *testing.T) {
	s := kmiptest.Start(t)
	k := newKEK(t, s, "atrest-node1", true)
	ctx := context.Background()
	pts := secrets(t, 3)
	reqs := wrapAll(t, k, pts)
	if w := reqs[0].Wrapped; w.Backend != "kmip" || w.Key != "atrest-node1" || !strings.HasPrefix(w.Ciphertext, fmt.Sprintf("kmip:v%d:", w.KeyVersion)) {
		t.Fatalf("wrapped %+v", w)
	}
	reqs[2].Wrapped = reqs[1].Wrapped // vol-1's token in vol-2's header
	sessions := strings.Count(s.Log(), "Dedicating session")
	res, err := k.Unwrap(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(s.Log(), "Dedicating session") - sessions; n != 1 {
		t.Fatalf("unwrapping 3 volumes took %d connections, want 1 (one batch message)", n)
	}
	for i := range 2 {
		if res[i].Err != nil || !res[i].Plaintext.Equal(pts[i]) {
			t.Fatalf("item %d: %v", i, res[i].Err)
		}
		res[i].Plaintext.Wipe()
	}
	if !errors.Is(res[2].Err, kms.ErrCiphertextRejected) || res[2].Plaintext != nil {
		t.Fatalf("another volume's token: %v, want ErrCiphertextRejected", res[2].Err)
	}
	tampered := reqs[0]
	tampered.Wrapped.Ciphertext = strings.TrimSuffix(tampered.Wrapped.Ciphertext, "=") + "x"
	if _, err := kms.Unwrap(ctx, k, tampered.Context, tampered.Wrapped); !errors.Is(err, kms.ErrCiphertextRejected) {
		t.Fatalf("tampered ciphertext: %v", err)
	}
}

// A rotation is a new key object taking over the name: status sees the
// token as stale, rewrap moves it to the new object, and once the old one
// is retired (revoked), an old token says which object and state refused it.
func TestRotateRewrapRetire(t *testing.T) {
	s := kmiptest.Start(t)
	k := newKEK(t, s, "atrest-fleet", true)
	ctx := context.Background()
	pts := secrets(t, 2)
	reqs := wrapAll(t, k, pts)
	info, err := k.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Stale(reqs[0].Wrapped) || info.MinDecryptionVersion != reqs[0].Wrapped.KeyVersion {
		t.Fatalf("after rotation %+v, token version %d is not stale", info, reqs[0].Wrapped.KeyVersion)
	}
	rw, err := k.Rewrap(ctx, reqs[:1])
	if err != nil || rw[0].Err != nil {
		t.Fatal(err, rw)
	}
	if rw[0].Wrapped.KeyVersion != info.LatestVersion || info.Stale(rw[0].Wrapped) {
		t.Fatalf("rewrapped to version %d, latest %d", rw[0].Wrapped.KeyVersion, info.LatestVersion)
	}
	got, err := kms.Unwrap(ctx, k, reqs[0].Context, rw[0].Wrapped)
	if err != nil || !got.Equal(pts[0]) {
		t.Fatalf("unwrap after rewrap: %v", err)
	}
	got.Wipe()
	if _, err := k.SetMinDecryptionVersion(ctx, info.LatestVersion); err != nil {
		t.Fatal(err)
	}
	_, err = kms.Unwrap(ctx, k, reqs[1].Context, reqs[1].Wrapped)
	if !errors.Is(err, kms.ErrPermissionDenied) || !strings.Contains(err.Error(), "Deactivated") {
		t.Fatalf("token of the retired object: %v, want ErrPermissionDenied naming the state", err)
	}
	if got, err := kms.Unwrap(ctx, k, reqs[0].Context, rw[0].Wrapped); err != nil {
		t.Fatalf("rewrapped token after the retirement: %v", err)
	} else {
		got.Wipe()
	}
}

// A key that exists but was never activated, and a destroyed one.
func TestKeyStates(t *testing.T) {
	s := kmiptest.Start(t)
	cl := clientFor(t, s, s.Client)
	ctx := context.Background()
	if _, err := cl.Create(ctx, "atrest-preactive"); err != nil {
		t.Fatal(err)
	}
	pts := secrets(t, 1)
	_, err := kms.Wrap(ctx, cl.KEK("atrest-preactive", true), "vol-0", pts[0])
	if !errors.Is(err, kms.ErrKeyNotFound) || !strings.Contains(err.Error(), "Pre-Active") {
		t.Fatalf("wrap with a Pre-Active key: %v, want ErrKeyNotFound naming the state", err)
	}
	_, err = kms.Wrap(ctx, cl.KEK("atrest-missing", false), "vol-0", pts[0])
	if !errors.Is(err, kms.ErrKeyNotFound) || !strings.Contains(err.Error(), "no key object is named") {
		t.Fatalf("wrap with no key and create off: %v", err)
	}

	k := cl.KEK("atrest-doomed", true)
	reqs := wrapAll(t, k, pts)
	uids, err := cl.Locate(ctx, "atrest-doomed")
	if err != nil || len(uids) != 1 {
		t.Fatal(uids, err)
	}
	if err := cl.Revoke(ctx, uids[0]); err != nil {
		t.Fatal(err)
	}
	if err := cl.Destroy(ctx, uids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := kms.Unwrap(ctx, k, reqs[0].Context, reqs[0].Wrapped); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("unwrap with the key destroyed: %v, want ErrKeyNotFound", err)
	}
}

// Another client identity of the same CA may not use the node's key.
func TestOtherIdentityDenied(t *testing.T) {
	s := kmiptest.Start(t)
	k := newKEK(t, s, "atrest-node1", true)
	reqs := wrapAll(t, k, secrets(t, 1))
	other := clientFor(t, s, s.CA.Client(t, "someone-else")).KEK("atrest-node1", false)
	_, err := kms.Unwrap(context.Background(), other, reqs[0].Context, reqs[0].Wrapped)
	if !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatalf("unwrap as another identity: %v, want ErrPermissionDenied", err)
	}
}

// kms check against a working server.
func TestCheck(t *testing.T) {
	s := kmiptest.Start(t)
	k := newKEK(t, s, "atrest-node1", true)
	wrapAll(t, k, secrets(t, 1))
	steps := k.Check(context.Background())
	if len(steps) != 3 {
		t.Fatalf("steps %+v", steps)
	}
	for _, st := range steps {
		if st.Err != nil {
			t.Fatalf("%s: %v", st.Name, st.Err)
		}
	}
}
