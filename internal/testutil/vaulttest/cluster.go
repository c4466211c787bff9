package vaulttest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Cluster is a running three-node test Vault with integrated storage
// (vaultserver -cluster 3): one process per node, so Kill is a real
// kill -9 and the survivors elect a new active node. The embedded Server
// is node 0 as it was at start (its Address, the root token, the CA) and
// the supervisor process.
type Cluster struct {
	*Server
	// Addresses are every node's API URL.
	Addresses []string `json:"addresses"`
	// Nodes are the nodes, in the order of Addresses.
	Nodes []ClusterNode `json:"nodes"`

	killed map[int]bool
}

// ClusterNode is one node process of a Cluster.
type ClusterNode struct {
	Address string `json:"address"`
	PID     int    `json:"pid"`
	NodeID  string `json:"node_id"`
	// Dir is the node's data directory (see AuditFile).
	Dir string `json:"dir"`
}

// EnvRaftMultiplier, if set, is the test cluster's Raft
// performance_multiplier.
const EnvRaftMultiplier = "ATREST_VAULT_RAFT_MULTIPLIER"

// ClusterSize is the number of nodes StartCluster starts: the smallest
// cluster that survives the loss of one node.
const ClusterSize = 3

// StartCluster runs a three-node Vault cluster for t alone and stops it
// when t ends. Every node is unsealed and a voter; node 0 is active.
// Starting costs a few seconds (three processes, two Raft joins).
//
// ATREST_VAULT_RAFT_MULTIPLIER sets Raft's performance_multiplier
// (vaultserver's default 2; docs/testing.md).
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	c := &Cluster{killed: map[int]bool{}}
	args := []string{"-cluster", fmt.Sprint(ClusterSize)}
	if m := os.Getenv(EnvRaftMultiplier); m != "" {
		args = append(args, "-raft-multiplier", m)
	}
	s, err := startProcess(Binary(t), c, args...)
	if err != nil {
		t.Fatal(err)
	}
	c.Server = s
	t.Cleanup(func() { c.stop() })
	return c
}

// NodeClient returns a root client of node i alone.
func (c *Cluster) NodeClient(t testing.TB, i int) *api.Client {
	t.Helper()
	return c.client(t, c.Addresses[i])
}

// Active waits up to a minute for a live node to be active (the end of
// an election) and returns its index.
func (c *Cluster) Active(t testing.TB) int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for i := range c.Nodes {
			if c.killed[i] {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			l, err := c.NodeClient(t, i).Sys().LeaderWithContext(ctx)
			cancel()
			if err == nil && l.IsSelf {
				return i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no active Vault node a minute after asking")
	return -1
}

// Kill kills node i with SIGKILL, as a power loss would, and waits until
// its process is gone. Its port then refuses connections.
func (c *Cluster) Kill(t testing.TB, i int) {
	t.Helper()
	pid := c.Nodes[i].PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill node %d (pid %d): %v", i, pid, err)
	}
	c.killed[i] = true
	deadline := time.Now().Add(30 * time.Second)
	// The supervisor reaps its child; until then the pid is a zombie
	// and kill(pid, 0) still succeeds.
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("node %d (pid %d) still exists 30s after SIGKILL", i, pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// KillActive kills the active node and returns its index.
func (c *Cluster) KillActive(t testing.TB) int {
	t.Helper()
	i := c.Active(t)
	c.Kill(t, i)
	return i
}

// Seal seals every live node (SIGUSR1, see integration/vaultserver's
// node.go: Vault's API seals only the active node) and waits until each
// reports sealed.
func (c *Cluster) Seal(t testing.TB) {
	t.Helper()
	for i, n := range c.Nodes {
		if c.killed[i] {
			continue
		}
		if err := syscall.Kill(n.PID, syscall.SIGUSR1); err != nil {
			t.Fatalf("seal node %d: %v", i, err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, err := c.NodeClient(t, i).Sys().SealStatus()
			if err == nil && st.Sealed {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d not sealed 30s after SIGUSR1: %+v, %v", i, st, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// RateLimit sets a rate-limit quota of rate requests per interval on
// the whole cluster (per client IP, as Vault counts), blocking an
// offender for block, and turns on the X-Ratelimit-* response headers.
func (c *Cluster) RateLimit(t testing.TB, name string, rate float64, interval, block time.Duration) {
	t.Helper()
	cl := c.NodeClient(t, c.Active(t))
	if _, err := cl.Logical().Write("sys/quotas/config", map[string]any{"enable_rate_limit_response_headers": true}); err != nil {
		t.Fatalf("quota config: %v", err)
	}
	q := map[string]any{"rate": rate, "interval": interval.String()}
	if block > 0 {
		q["block_interval"] = block.String()
	}
	if _, err := cl.Logical().Write("sys/quotas/rate-limit/"+name, q); err != nil {
		t.Fatalf("rate-limit quota %s: %v", name, err)
	}
}

// RemoveRateLimit deletes a quota RateLimit set. A quota without a path
// covers sys/quotas too, and right after a storm its bucket (shared by
// every client on loopback) may still be empty: a 429 is waited out, a
// second at a time for up to a minute.
func (c *Cluster) RemoveRateLimit(t testing.TB, name string) {
	t.Helper()
	cl := c.NodeClient(t, c.Active(t))
	for try := 0; ; try++ {
		_, err := cl.Logical().Delete("sys/quotas/rate-limit/" + name)
		if err == nil {
			return
		}
		if !RateLimited(err) || try == 60 {
			t.Fatalf("delete quota %s: %v", name, err)
		}
		time.Sleep(time.Second)
	}
}

// RateLimited reports whether err is Vault's answer 429 (a rate-limit
// quota exceeded).
func RateLimited(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == 429
}

// auditFile is the file audit device's file_path: relative, so each
// node (whose working directory is its Dir) writes its own.
const auditFile = "audit.log"

// EnableAudit enables a file audit device on the cluster, through the
// active node: audit devices are replicated configuration, so every
// node writes the requests it serves as active to its own AuditFile.
func (c *Cluster) EnableAudit(t testing.TB) {
	t.Helper()
	err := c.NodeClient(t, c.Active(t)).Sys().EnableAuditWithOptions("file", &api.EnableAuditOptions{
		Type: "file", Options: map[string]string{"file_path": auditFile},
	})
	if err != nil {
		t.Fatalf("enable the file audit device: %v", err)
	}
}

// AuditFile is node i's audit log (EnableAudit).
func (c *Cluster) AuditFile(i int) string { return filepath.Join(c.Nodes[i].Dir, auditFile) }

// Settle waits up to a minute until every live standby forwards a
// request to the active node instead of answering 307 or 500 (a standby
// does so for a while after an election, until it has connected to the
// new active node), so that a test after a failover measures what it
// means to, not that.
func (c *Cluster) Settle(t testing.TB) {
	t.Helper()
	active := c.Active(t)
	deadline := time.Now().Add(time.Minute)
	for i := range c.Nodes {
		if c.killed[i] || i == active {
			continue
		}
		cl := c.clientOf(t, c.Addresses[i], true)
		for {
			// Raw, so that a 307 (not an error to vault/api with
			// redirects off) is seen as the status it is.
			resp, err := cl.Logical().ReadRawWithData("auth/token/lookup-self", nil)
			status := 0
			if resp != nil {
				status = resp.StatusCode
				resp.Body.Close()
			}
			if err == nil && status == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("standby node %d does not forward a minute after asking: HTTP %d, %v", i, status, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
