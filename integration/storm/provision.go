// Package storm simulates a datacenter powering on: M atrest nodes, each
// with its own AppRole login, transit key (derived, volume UUIDs as
// contexts) and 24 volume tokens, unlocking against one Vault cluster
// within a second. Each simulated node goes through the code atrestd
// runs at boot from its configuration on: config.Parse of the node's
// atrest.yaml, backends.Open (the vault.Client with its retries and
// failover), and backends.Set.Unwrap, the one batched call
// pkg/volume's unlock makes for all of a node's volumes. Only the
// LUKS2 headers are left out: the tokens a header would hold are passed
// to Unwrap directly, exactly as pkg/volume builds them.
//
// Provision sets up a fleet on a cluster the way docs/vault.md tells
// operators to; Run runs the storm and returns its Report; Ceiling
// measures a plain batch-decrypt client against the same cluster.
// storm_test.go runs it against vaulttest's three-node cluster (M=100 in
// CI, M=1000 with `make bench`), or against a cluster of your own
// (docs/fleet.md).
package storm

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/vault"
	"github.com/hashicorp/vault/api"
)

// ExampleNode is the node name docs/vault.md's node policy is written
// for; each node's policy is that text with its own name.
const ExampleNode = "node7"

// Fleet is a provisioned fleet on one cluster.
type Fleet struct {
	Addresses []string
	CAFile    string
	Nodes     []*Node
}

// Node is one simulated machine: its AppRole login and its volumes'
// tokens.
type Node struct {
	Name string
	// Key is the node's transit key, atrest-<name>.
	Key string
	// RoleID and SecretIDFile are its AppRole login (the file 0600).
	RoleID, SecretIDFile string
	// Volumes are what its LUKS2 headers' tokens say, with each
	// volume's UUID as the derivation context.
	Volumes []kms.UnwrapRequest
	// secretID is kept for Revoke.
	secretID string
}

// Provision creates m nodes with volumes tokens each on the cluster that
// admin (a root or admin token) reaches, at most parallel at a time:
// per node a derived transit key, the documented node policy
// (nodePolicy, written for ExampleNode), an AppRole role and secret-id
// (written under dir), and the volumes' platform secrets wrapped by
// one batch encrypt. The plaintexts are random and dropped.
//
// tokenType is the AppRole role's token_type: "service" (Vault's
// default, what docs/vault.md sets up) or "batch" (not written to
// storage; docs/fleet.md).
func Provision(ctx context.Context, admin *api.Client, addresses []string, caFile, nodePolicy, tokenType, prefix string, m, volumes, parallel int, dir string) (*Fleet, error) {
	if err := mounts(ctx, admin); err != nil {
		return nil, err
	}
	f := &Fleet{Addresses: addresses, CAFile: caFile, Nodes: make([]*Node, m)}
	errs := make([]error, m)
	var wg sync.WaitGroup
	work := make(chan int)
	for range max(1, parallel) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				f.Nodes[i], errs[i] = provisionNode(ctx, admin, nodePolicy, tokenType, prefix, i, volumes, dir)
			}
		}()
	}
	for i := range m {
		work <- i
	}
	close(work)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("provision node %d: %w", i, err)
		}
	}
	return f, nil
}

func mounts(ctx context.Context, admin *api.Client) error {
	ms, err := admin.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return err
	}
	if ms["transit/"] == nil {
		if err := admin.Sys().MountWithContext(ctx, "transit", &api.MountInput{Type: "transit"}); err != nil {
			return err
		}
	}
	as, err := admin.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return err
	}
	if as["approle/"] == nil {
		return admin.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &api.EnableAuthOptions{Type: "approle"})
	}
	return nil
}

func provisionNode(ctx context.Context, admin *api.Client, policy, tokenType, prefix string, idx, volumes int, dir string) (*Node, error) {
	name := fmt.Sprintf("%s%d", prefix, idx)
	n := &Node{Name: name, Key: "atrest-" + name}
	l := admin.Logical()
	if _, err := l.WriteWithContext(ctx, "transit/keys/"+n.Key, map[string]any{"derived": true}); err != nil {
		return nil, err
	}
	if err := admin.Sys().PutPolicyWithContext(ctx, n.Key, strings.ReplaceAll(policy, ExampleNode, name)); err != nil {
		return nil, err
	}
	if _, err := l.WriteWithContext(ctx, "auth/approle/role/"+n.Key, map[string]any{"token_policies": n.Key, "token_ttl": "1h", "token_type": tokenType}); err != nil {
		return nil, err
	}
	sec, err := l.ReadWithContext(ctx, "auth/approle/role/"+n.Key+"/role-id")
	if err != nil {
		return nil, err
	}
	n.RoleID = fmt.Sprint(sec.Data["role_id"])
	if sec, err = l.WriteWithContext(ctx, "auth/approle/role/"+n.Key+"/secret-id", nil); err != nil {
		return nil, err
	}
	n.secretID = fmt.Sprint(sec.Data["secret_id"])
	n.SecretIDFile = filepath.Join(dir, name+".secret-id")
	if err := os.WriteFile(n.SecretIDFile, []byte(n.secretID+"\n"), 0o600); err != nil {
		return nil, err
	}
	// The node's volumes, as format leaves them: one platform secret per
	// volume, wrapped under the volume's UUID.
	batch := make([]map[string]any, volumes)
	uuids := make([]string, volumes)
	for v := range volumes {
		uuids[v] = fmt.Sprintf("%08x-%04x-4000-8000-%012x", idx, v, len(prefix))
		batch[v] = map[string]any{
			"plaintext": base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("%032d", v))),
			"context":   base64.StdEncoding.EncodeToString([]byte(uuids[v])),
		}
	}
	sec, err = l.WriteWithContext(ctx, "transit/encrypt/"+n.Key, map[string]any{"batch_input": batch})
	if err != nil {
		return nil, err
	}
	results, _ := sec.Data["batch_results"].([]any)
	if len(results) != volumes {
		return nil, fmt.Errorf("encrypt: %d results for %d volumes", len(results), volumes)
	}
	for v, r := range results {
		ct, _ := r.(map[string]any)["ciphertext"].(string)
		ver, err := kms.CiphertextVersion("vault", ct)
		if err != nil {
			return nil, err
		}
		n.Volumes = append(n.Volumes, kms.UnwrapRequest{
			Context: uuids[v],
			Wrapped: kms.Wrapped{Backend: vault.BackendTransit, Key: n.Key, KeyVersion: ver, Ciphertext: ct},
		})
	}
	return n, nil
}

// Revoke destroys the node's secret-id, as an operator does when a
// machine is lost: its next login fails, nothing else changes.
func (n *Node) Revoke(ctx context.Context, admin *api.Client) error {
	_, err := admin.Logical().WriteWithContext(ctx, "auth/approle/role/"+n.Key+"/secret-id/destroy", map[string]any{"secret_id": n.secretID})
	return err
}
