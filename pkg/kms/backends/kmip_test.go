package backends

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/atrest/atrest/internal/testutil/kmiptest"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/secret"
)

// kms: kmip wraps through the configured key manager, with the key named
// per node, and any Set built from the same file unwraps the token by the
// backend and key it records; a Set without a kmip section says the key is
// not found rather than trying Vault.
func TestKMIPFromConfig(t *testing.T) {
	s := kmiptest.Start(t)
	doc := fmt.Sprintf("kms: kmip\nkmip:\n  address: %s\n  server_name: %s\n  ca_file: %s\n  cert_file: %s\n  key_file: %s\n  key: atrest-{hostname}-data\n",
		s.Address, s.ServerName, s.CA.File, s.Client.CertFile, s.Client.KeyFile)
	cfg, err := config.Parse([]byte(doc), "")
	if err != nil {
		t.Fatal(err)
	}
	set, err := Open(cfg, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	kek, err := set.Wrapper()
	if err != nil {
		t.Fatal(err)
	}
	if want := "atrest-" + hostname(t) + "-data"; kek.Key() != want || kek.Backend() != "kmip" {
		t.Fatalf("wrapper %s key %q, want kmip key %q", kek.Backend(), kek.Key(), want)
	}
	ps, err := secret.Random(32)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Wipe()
	ctx := context.Background()
	w, err := kms.Wrap(ctx, kek, "uuid-1", ps)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := Open(cfg, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	res := fresh.Unwrap(ctx, []kms.UnwrapRequest{{Context: "uuid-1", Wrapped: w}})
	if res[0].Err != nil || !res[0].Plaintext.Equal(ps) {
		t.Fatalf("unwrap through a fresh set: %v", res[0].Err)
	}
	res[0].Plaintext.Wipe()

	local, err := config.Parse([]byte("kms: local\nlocal:\n  keystore: "+t.TempDir()+"/kek\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	other, err := Open(local, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	res = other.Unwrap(ctx, []kms.UnwrapRequest{{Context: "uuid-1", Wrapped: w}})
	if !errors.Is(res[0].Err, kms.ErrKeyNotFound) {
		t.Fatalf("kmip token without a kmip section: %v, want ErrKeyNotFound", res[0].Err)
	}
}

func hostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
