package vaulttest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"
)

// ExampleNode is the node name docs/vault.md's policies are written for;
// Provision replaces it with the real node's name, as operators do.
const ExampleNode = "node7"

// Policies returns the HCL policies in docs/vault.md, by name: each is the
// ```hcl block that follows a line `<!-- policy: NAME -->`. Tests load
// exactly what the documentation tells operators to load.
func Policies(t testing.TB) map[string]string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(root, "docs", "vault.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	var name string
	var body *strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case body != nil && strings.HasPrefix(line, "```"):
			out[name], body, name = body.String(), nil, ""
		case body != nil:
			body.WriteString(line + "\n")
		case strings.HasPrefix(line, "<!-- policy: "):
			name = strings.TrimSuffix(strings.TrimPrefix(line, "<!-- policy: "), " -->")
		case name != "" && line == "```hcl":
			body = &strings.Builder{}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"atrest-node", "atrest-admin"} {
		if out[want] == "" {
			t.Fatalf("docs/vault.md has no policy %q", want)
		}
	}
	return out
}

// Node is what Provision set up for one node.
type Node struct {
	Name string
	// Key is the node's transit key, "atrest-<name>".
	Key string
	// Policy is the node's policy name, "atrest-<name>".
	Policy string
	// RoleID and SecretIDFile are the node's AppRole login; the file is
	// private (0600) in the test's temporary directory.
	RoleID       string
	SecretIDFile string
}

var mountsMu sync.Mutex

// Provision sets up a node the way docs/vault.md tells operators to: the
// transit engine and approle method (once per server), a derived transit
// key atrest-<node>, the documented node and admin policies, and an
// AppRole role atrest-<node> with that policy. roleOpts adds fields to the
// role (e.g. token_ttl).
func Provision(t testing.TB, s *Server, node string, roleOpts map[string]any) Node {
	t.Helper()
	c := s.Client(t)
	mountsMu.Lock()
	mounts, err := c.Sys().ListMounts()
	if err == nil && mounts["transit/"] == nil {
		err = c.Sys().Mount("transit", &api.MountInput{Type: "transit"})
	}
	var auths map[string]*api.AuthMount
	if err == nil {
		auths, err = c.Sys().ListAuth()
	}
	if err == nil && auths["approle/"] == nil {
		err = c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"})
	}
	mountsMu.Unlock()
	if err != nil {
		t.Fatalf("provision mounts: %v", err)
	}
	n := Node{Name: node, Key: "atrest-" + node, Policy: "atrest-" + node}
	pol := Policies(t)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("provision %s: %s: %v", node, what, err)
		}
	}
	_, err = c.Logical().Write("transit/keys/"+n.Key, map[string]any{"derived": true})
	must("transit key", err)
	must("node policy", c.Sys().PutPolicy(n.Policy, strings.ReplaceAll(pol["atrest-node"], ExampleNode, node)))
	must("admin policy", c.Sys().PutPolicy("atrest-admin", pol["atrest-admin"]))
	role := map[string]any{"token_policies": n.Policy}
	for k, v := range roleOpts {
		role[k] = v
	}
	_, err = c.Logical().Write("auth/approle/role/"+n.Key, role)
	must("approle role", err)
	sec, err := c.Logical().Read("auth/approle/role/" + n.Key + "/role-id")
	must("role-id", err)
	n.RoleID = fmt.Sprint(sec.Data["role_id"])
	sec, err = c.Logical().Write("auth/approle/role/"+n.Key+"/secret-id", nil)
	must("secret-id", err)
	n.SecretIDFile = filepath.Join(t.TempDir(), "secret-id")
	must("secret-id file", os.WriteFile(n.SecretIDFile, []byte(fmt.Sprint(sec.Data["secret_id"])+"\n"), 0o600))
	return n
}

// Token creates a token with the given policies and options (ttl,
// renewable, ...) through the root token.
func (s *Server) Token(t testing.TB, req *api.TokenCreateRequest) string {
	t.Helper()
	sec, err := s.Client(t).Auth().Token().Create(req)
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return sec.Auth.ClientToken
}
