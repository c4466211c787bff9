package vault_test

import (
	"errors"
	"testing"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/vault"
	"github.com/hashicorp/vault/api"
)

func stepErr(steps []kms.CheckStep, name string) (error, bool) {
	for _, s := range steps {
		if s.Name == name {
			return s.Err, true
		}
	}
	return nil, false
}

func TestCheckFindsWhatIsWrong(t *testing.T) {
	s := vaulttest.Shared(t)
	tr, n := nodeTransit(t, s)
	steps := tr.Check(ctx(t))
	for _, name := range []string{"reachable", "auth", "key", "permissions", "round trip"} {
		err, ok := stepErr(steps, name)
		if !ok || err != nil {
			t.Errorf("healthy node: step %q present=%v err=%v", name, ok, err)
		}
	}

	// A policy without rewrap: permissions fail, naming the path.
	root := s.Client(t)
	if err := root.Sys().PutPolicy("no-rewrap", `
path "transit/encrypt/`+n.Key+`" { capabilities = ["update"] }
path "transit/decrypt/`+n.Key+`" { capabilities = ["update"] }
path "transit/keys/`+n.Key+`" { capabilities = ["read"] }
`); err != nil {
		t.Fatal(err)
	}
	tok := s.Token(t, &api.TokenCreateRequest{Policies: []string{"no-rewrap"}, TTL: "1h"})
	weak := newTransit(t, newClient(t, vault.Config{Address: s.Address, CACert: s.CAFile, Auth: vault.Auth{Token: tok}}), n.Key)
	if err, _ := stepErr(weak.Check(ctx(t)), "permissions"); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Errorf("policy without rewrap: permissions step = %v, want ErrPermissionDenied", err)
	}

	// A key that is not derived would not bind secrets to volumes.
	if _, err := root.Logical().Write("transit/keys/atrest-flat", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	flat := newTransit(t, newClient(t, vault.Config{Address: s.Address, CACert: s.CAFile, Auth: vault.Auth{Token: s.RootToken}}), "atrest-flat")
	if err, _ := stepErr(flat.Check(ctx(t)), "key"); !errors.Is(err, kms.ErrConfig) {
		t.Errorf("non-derived key: key step = %v, want ErrConfig", err)
	}

	// An escrow the node can read is a finding.
	leaky, err := vault.NewKV(tr.Client(), vault.KVConfig{Prefix: "atrest", Host: n.Name, Escrow: true})
	if err != nil {
		t.Fatal(err)
	}
	if err, _ := stepErr(leaky.Check(ctx(t)), "permissions"); !errors.Is(err, kms.ErrConfig) {
		t.Errorf("readable escrow: permissions step = %v, want ErrConfig", err)
	}
}

func TestCheckUnreachable(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	addr, ca := s.Address, s.CAFile
	c := newClient(t, vault.Config{Address: addr, CACert: ca, Auth: vault.Auth{Token: s.RootToken}})
	tr := newTransit(t, c, "atrest-x")
	s.Stop(t)
	steps := tr.Check(ctx(t))
	if len(steps) != 1 || !errors.Is(steps[0].Err, kms.ErrUnavailable) {
		t.Errorf("check against a stopped server: %+v", steps)
	}
}
