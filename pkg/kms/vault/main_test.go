package vault_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/vault"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/hashicorp/vault/api"
)

func TestMain(m *testing.M) { os.Exit(vaulttest.Main(m)) }

var nodeSeq atomic.Int64

// provision sets up a fresh node (own key, policy, role) on s.
func provision(t testing.TB, s *vaulttest.Server, roleOpts map[string]any) vaulttest.Node {
	t.Helper()
	name := "node" + strconv.FormatInt(nodeSeq.Add(1), 10)
	return vaulttest.Provision(t, s, name, roleOpts)
}

// appRoleConfig is the node's Vault config as an operator writes it.
func appRoleConfig(s *vaulttest.Server, n vaulttest.Node) vault.Config {
	return vault.Config{
		Address: s.Address,
		CACert:  s.CAFile,
		Auth: vault.Auth{Method: "approle", AppRole: vault.AppRole{
			RoleID: n.RoleID, SecretIDFile: n.SecretIDFile,
		}},
	}
}

// tokenFile writes token to a private file.
func tokenFile(t testing.TB, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newClient(t testing.TB, cfg vault.Config) *vault.Client {
	t.Helper()
	c, err := vault.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newTransit(t testing.TB, c *vault.Client, key string) *vault.Transit {
	t.Helper()
	tr, err := vault.NewTransit(c, vault.TransitConfig{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// nodeTransit provisions a node and returns its transit KEK logged in
// through AppRole with the documented node policy.
func nodeTransit(t testing.TB, s *vaulttest.Server) (*vault.Transit, vaulttest.Node) {
	t.Helper()
	n := provision(t, s, nil)
	return newTransit(t, newClient(t, appRoleConfig(s, n)), n.Key), n
}

// adminTransit is the same key through a token with the documented
// admin policy.
func adminTransit(t testing.TB, s *vaulttest.Server, key string) *vault.Transit {
	t.Helper()
	tok := s.Token(t, vaultTokenReq("atrest-admin"))
	return newTransit(t, newClient(t, vault.Config{Address: s.Address, CACert: s.CAFile, Auth: vault.Auth{TokenFile: tokenFile(t, tok)}}), key)
}

func random(t testing.TB, n int) *secret.Key {
	t.Helper()
	k, err := secret.Random(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

var _ kms.KEK = (*vault.Transit)(nil)

func vaultTokenReq(policies ...string) *api.TokenCreateRequest {
	return &api.TokenCreateRequest{Policies: policies, TTL: "1h"}
}

func ctxCancel(t testing.TB) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return c, cancel
}
