package vault_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/vault"
)

const (
	volA = "0b5c2a52-8a4e-4b8f-9f43-1c1f0c6c2a01"
	volB = "9d1f3c77-2e55-4c3a-8b0e-7a6f5e4d3c02"
)

func TestTransitRoundTrip(t *testing.T) {
	s := vaulttest.Shared(t)
	tr, n := nodeTransit(t, s)
	pt := random(t, 32)
	w, err := kms.Wrap(ctx(t), tr, volA, pt)
	if err != nil {
		t.Fatal(err)
	}
	if w.Backend != "vault-transit" || w.Key != n.Key || w.KeyVersion != 1 || !strings.HasPrefix(w.Ciphertext, "vault:v1:") {
		t.Errorf("wrapped = %+v", w)
	}
	got, err := kms.Unwrap(ctx(t), tr, volA, w)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Wipe()
	if !got.Equal(pt) {
		t.Error("unwrap returned different bytes than were wrapped")
	}
	info, err := tr.Describe(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.LatestVersion != 1 || info.MinDecryptionVersion != 1 || info.Stale(w) {
		t.Errorf("describe = %+v", info)
	}
}

func TestTransitOtherVolumeContextRejected(t *testing.T) {
	s := vaulttest.Shared(t)
	tr, _ := nodeTransit(t, s)
	w, err := kms.Wrap(ctx(t), tr, volA, random(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	_, err = kms.Unwrap(ctx(t), tr, volB, w)
	if !errors.Is(err, kms.ErrCiphertextRejected) {
		t.Fatalf("unwrap with another volume's context = %v, want ErrCiphertextRejected", err)
	}
	tampered := w
	tampered.Ciphertext = w.Ciphertext[:len(w.Ciphertext)-6] + "AAAAA="
	if _, err := kms.Unwrap(ctx(t), tr, volA, tampered); !errors.Is(err, kms.ErrCiphertextRejected) {
		t.Errorf("unwrap of a tampered ciphertext = %v, want ErrCiphertextRejected", err)
	}
	// A token naming another key is refused before Vault is asked.
	other := w
	other.Key = "atrest-someone-else"
	if _, err := kms.Unwrap(ctx(t), tr, volA, other); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Errorf("unwrap of another key's token = %v, want ErrKeyNotFound", err)
	}
}

func TestTransitRotateRewrapMinDecryption(t *testing.T) {
	s := vaulttest.Shared(t)
	tr, n := nodeTransit(t, s)
	admin := adminTransit(t, s, n.Key)
	pt := random(t, 32)
	old, err := kms.Wrap(ctx(t), tr, volA, pt)
	if err != nil {
		t.Fatal(err)
	}
	// The node may not rotate its own key; the admin may.
	if _, err := tr.Rotate(ctx(t)); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Errorf("node rotating its key = %v, want ErrPermissionDenied", err)
	}
	info, err := admin.Rotate(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.LatestVersion != 2 {
		t.Fatalf("after rotate: %+v", info)
	}
	if got, err := tr.Describe(ctx(t)); err != nil || !got.Stale(old) {
		t.Errorf("node's describe after rotation = %+v, %v; the v1 token must be stale", got, err)
	}
	nw, err := kms.Rewrap(ctx(t), tr, volA, old)
	if err != nil {
		t.Fatal(err)
	}
	if nw.KeyVersion != 2 || !strings.HasPrefix(nw.Ciphertext, "vault:v2:") {
		t.Fatalf("rewrapped = %+v", nw)
	}
	for _, w := range []kms.Wrapped{old, nw} {
		got, err := kms.Unwrap(ctx(t), tr, volA, w)
		if err != nil {
			t.Fatalf("v%d before min_decryption_version moved: %v", w.KeyVersion, err)
		}
		if !got.Equal(pt) {
			t.Errorf("v%d unwrapped to other bytes", w.KeyVersion)
		}
		got.Wipe()
	}
	if _, err := tr.SetMinDecryptionVersion(ctx(t), 2); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Errorf("node moving min_decryption_version = %v, want ErrPermissionDenied", err)
	}
	if info, err = admin.SetMinDecryptionVersion(ctx(t), 2); err != nil || info.MinDecryptionVersion != 2 {
		t.Fatalf("set min_decryption_version: %+v, %v", info, err)
	}
	if _, err := kms.Unwrap(ctx(t), tr, volA, old); !errors.Is(err, kms.ErrCiphertextRejected) || !strings.Contains(err.Error(), "too old") {
		t.Errorf("v1 below min_decryption_version = %v, want ErrCiphertextRejected (too old)", err)
	}
	got, err := kms.Unwrap(ctx(t), tr, volA, nw)
	if err != nil {
		t.Fatalf("v2 after min_decryption_version moved: %v", err)
	}
	got.Wipe()
	// The move is reversible in Vault: the old version comes back.
	if _, err = admin.SetMinDecryptionVersion(ctx(t), 1); err != nil {
		t.Fatal(err)
	}
	got, err = kms.Unwrap(ctx(t), tr, volA, old)
	if err != nil {
		t.Fatalf("v1 after lowering min_decryption_version again: %v", err)
	}
	got.Wipe()
}

func TestTransitBatchOf1000(t *testing.T) {
	s := vaulttest.Shared(t)
	tr, _ := nodeTransit(t, s)
	const n = 1000
	reqs := make([]kms.WrapRequest, n)
	for i := range reqs {
		reqs[i] = kms.WrapRequest{Context: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Plaintext: random(t, 32)}
	}
	wrapped, err := tr.Wrap(ctx(t), reqs)
	if err != nil {
		t.Fatal(err)
	}
	un := make([]kms.UnwrapRequest, n)
	for i, w := range wrapped {
		if w.Err != nil {
			t.Fatalf("item %d: %v", i, w.Err)
		}
		un[i] = kms.UnwrapRequest{Context: reqs[i].Context, Wrapped: w.Wrapped}
	}
	un[500].Context = volB // one token moved to another volume
	res, err := tr.Unwrap(ctx(t), un)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if i == 500 {
			if !errors.Is(r.Err, kms.ErrCiphertextRejected) {
				t.Errorf("moved token: %v, want ErrCiphertextRejected", r.Err)
			}
			continue
		}
		if r.Err != nil || !r.Plaintext.Equal(reqs[i].Plaintext) {
			t.Fatalf("item %d: %v (results out of order?)", i, r.Err)
		}
		r.Plaintext.Wipe()
	}
	un[500].Context = reqs[500].Context
	rw, err := tr.Rewrap(ctx(t), un)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rw {
		if r.Err != nil || r.Wrapped.KeyVersion != 1 {
			t.Fatalf("rewrap item %d: %+v", i, r)
		}
	}
}

func TestTransitMissingKey(t *testing.T) {
	s := vaulttest.Shared(t)
	n := provision(t, s, nil)
	c := newClient(t, appRoleConfig(s, n))
	// The node's policy names only its own key; a typo in the config
	// must say "key not found", not create a key or loop on 403.
	tr := newTransit(t, c, n.Key+"-typo")
	if _, err := kms.Wrap(ctx(t), tr, volA, random(t, 32)); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Errorf("wrap with a key outside the policy = %v, want ErrPermissionDenied", err)
	}
	root := newTransit(t, newClient(t, vault.Config{Address: s.Address, CACert: s.CAFile, Auth: vault.Auth{Token: s.RootToken}}), "atrest-missing")
	if _, err := root.Describe(ctx(t)); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Errorf("describe of a missing key = %v, want ErrKeyNotFound", err)
	}
	if _, err := kms.Unwrap(ctx(t), root, volA, kms.Wrapped{Backend: "vault-transit", Key: "atrest-missing", KeyVersion: 1, Ciphertext: "vault:v1:AAAA"}); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Errorf("unwrap with a missing key = %v, want ErrKeyNotFound", err)
	}
}

// A transit key that is not derived ignores the volume context: Wrap and
// Rewrap refuse it (the same check as kms check), so format, rekey and
// rewrap cannot make tokens that another volume's ciphertext could stand
// in for.
func TestTransitRefusesAKeyThatIsNotDerived(t *testing.T) {
	s := vaulttest.Shared(t)
	nodeTransit(t, s) // mounts transit
	root := s.Client(t)
	if _, err := root.Logical().Write("transit/keys/atrest-flat-wrap", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	flat := newTransit(t, newClient(t, vault.Config{Address: s.Address, CACert: s.CAFile, Auth: vault.Auth{Token: s.RootToken}}), "atrest-flat-wrap")
	if err := flat.Prepare(ctx(t)); !errors.Is(err, kms.ErrConfig) || !strings.Contains(err.Error(), "not derived") {
		t.Fatalf("prepare with a key that is not derived: %v, want ErrConfig", err)
	}
	_, err := kms.Wrap(ctx(t), flat, volA, random(t, 32))
	if !errors.Is(err, kms.ErrConfig) || !strings.Contains(err.Error(), "not derived") {
		t.Fatalf("wrap with a key that is not derived: %v, want ErrConfig", err)
	}
	// A ciphertext Vault made with that key (as an earlier atrest could):
	// rewrap refuses to renew it, unwrap still opens it for a reseal.
	sec, err := root.Logical().Write("transit/encrypt/atrest-flat-wrap", map[string]any{"plaintext": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="})
	if err != nil {
		t.Fatal(err)
	}
	w := kms.Wrapped{Backend: "vault-transit", Key: "atrest-flat-wrap", KeyVersion: 1, Ciphertext: sec.Data["ciphertext"].(string)}
	res, err := flat.Rewrap(ctx(t), []kms.UnwrapRequest{{Context: volA, Wrapped: w}})
	if err == nil && len(res) == 1 {
		err = res[0].Err
	}
	if !errors.Is(err, kms.ErrConfig) {
		t.Fatalf("rewrap with a key that is not derived: %v, want ErrConfig", err)
	}
}

// Prepare does what a Wrap would do first (the login, the key's check)
// and nothing else; the Wrap after it then sends only its encrypt.
func TestTransitPrepareLogsInAndChecksTheKey(t *testing.T) {
	s := vaulttest.Shared(t)
	tr, _ := nodeTransit(t, s)
	st := tr.Client().Stats()
	if err := tr.Prepare(ctx(t)); err != nil {
		t.Fatal(err)
	}
	after := tr.Client().Stats()
	if after.Requests-st.Requests != 2 || after.ByOp["transit read key"]-st.ByOp["transit read key"] != 1 || after.Logins-st.Logins != 1 {
		t.Fatalf("prepare sent %v (logins %d), want one login and one key read", after.ByOp, after.Logins-st.Logins)
	}
	w, err := kms.Wrap(ctx(t), tr, volA, random(t, 32))
	if err != nil || w.Ciphertext == "" {
		t.Fatalf("wrap after prepare: %v", err)
	}
	if n := tr.Client().Stats().Requests - after.Requests; n != 1 {
		t.Fatalf("wrap after prepare sent %d requests, want its encrypt alone", n)
	}
}
