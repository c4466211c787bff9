package kmip

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil/kmiptest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/secret"
)

func clientFor(t *testing.T, s *kmiptest.Server, id kmiptest.Identity) *Client {
	t.Helper()
	cl, err := New(Config{Address: s.Address, ServerName: s.ServerName, CAFile: s.CA.File,
		CertFile: id.CertFile, KeyFile: id.KeyFile, Key: "atrest-test", Timeout: 5 * time.Second, Deadline: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// The operations against pykmip-server: create and activate, locate by
// name, attributes, and an Encrypt/Decrypt round trip bound to its
// additional data; a revoked key stops decrypting, a destroyed one is gone.
func TestOperations(t *testing.T) {
	s := kmiptest.Start(t)
	cl := clientFor(t, s, s.Client)
	ctx := context.Background()
	vers, err := cl.DiscoverVersions(ctx)
	if err != nil || !slices.Contains(vers, "1.4") {
		t.Fatalf("discover versions: %v %v, want 1.4 among them\n%s", vers, err, s.Log())
	}
	uid, err := cl.CreateKey(ctx, "atrest-test")
	if err != nil {
		t.Fatalf("%v\n%s", err, s.Log())
	}
	uids, err := cl.Locate(ctx, "atrest-test")
	if err != nil || len(uids) != 1 || uids[0] != uid {
		t.Fatalf("locate: %v %v, want [%s]", uids, err, uid)
	}
	objs, errs, err := cl.GetAttributes(ctx, []string{uid, "999"})
	if err != nil {
		t.Fatal(err)
	}
	if o := objs[0]; errs[0] != nil || o.Name != "atrest-test" || o.State != StateActive || o.Initial.IsZero() {
		t.Fatalf("attributes of the new key: %+v %v", o, errs[0])
	}
	if !errors.Is(errs[1], kms.ErrKeyNotFound) {
		t.Fatalf("attributes of a missing object: %v, want ErrKeyNotFound", errs[1])
	}
	pt, _ := secret.Random(32)
	defer pt.Wipe()
	ss, errs, err := cl.encrypt(ctx, uid, []*secret.Key{pt, pt}, []string{"vol-a", "vol-b"})
	if err != nil || errs[0] != nil || errs[1] != nil {
		t.Fatalf("%v %v\n%s", err, errs, s.Log())
	}
	got, errs, err := cl.decrypt(ctx, []string{uid, uid}, []sealed{ss[0], ss[0]}, []string{"vol-a", "vol-b"})
	if err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || !got[0].Equal(pt) {
		t.Fatalf("decrypt: %v", errs[0])
	}
	got[0].Wipe()
	if !errors.Is(errs[1], kms.ErrCiphertextRejected) {
		t.Fatalf("decrypt with another volume's additional data: %v, want ErrCiphertextRejected", errs[1])
	}
	if err := cl.Revoke(ctx, uid); err != nil {
		t.Fatal(err)
	}
	_, errs, _ = cl.decrypt(ctx, []string{uid}, []sealed{ss[0]}, []string{"vol-a"})
	if !errors.Is(errs[0], kms.ErrPermissionDenied) {
		t.Fatalf("decrypt with a revoked key: %v, want ErrPermissionDenied", errs[0])
	}
	if err := cl.Destroy(ctx, uid); err != nil {
		t.Fatal(err)
	}
	_, errs, _ = cl.decrypt(ctx, []string{uid}, []sealed{ss[0]}, []string{"vol-a"})
	if !errors.Is(errs[0], kms.ErrKeyNotFound) {
		t.Fatalf("decrypt with a destroyed key: %v, want ErrKeyNotFound", errs[0])
	}
}
