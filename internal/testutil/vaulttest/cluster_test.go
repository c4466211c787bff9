package vaulttest

import (
	"testing"
	"time"
)

// What a user of the cluster relies on: a standby serves (by forwarding)
// what the active node has, and after the active node is killed the
// survivors elect a new one that still holds every write.
func TestClusterSurvivesKillOfActiveNode(t *testing.T) {
	c := StartCluster(t)
	if len(c.Addresses) != ClusterSize || len(c.Nodes) != ClusterSize {
		t.Fatalf("cluster of %d addresses, %d nodes; want %d", len(c.Addresses), len(c.Nodes), ClusterSize)
	}
	if _, err := c.NodeClient(t, 1).Logical().Write("secret/data/probe", map[string]any{"data": map[string]any{"k": "v"}}); err != nil {
		t.Fatalf("write through a standby: %v", err)
	}
	old := c.KillActive(t)
	now := c.Active(t)
	if now == old {
		t.Fatalf("node %d still active after kill -9", old)
	}
	sec, err := c.NodeClient(t, now).Logical().Read("secret/data/probe")
	if err != nil || sec == nil {
		t.Fatalf("read on the new active node %d: %v, %v", now, sec, err)
	}
	if got := sec.Data["data"].(map[string]any)["k"]; got != "v" {
		t.Errorf("after failover k = %v, want v", got)
	}
	c.Seal(t)
	if _, err := c.NodeClient(t, now).Logical().Read("secret/data/probe"); err == nil {
		t.Error("a sealed cluster still answers reads")
	}
}

// A storm test's cleanup removes its quota right after the storm, when
// the quota (which covers sys/quotas too) may have no request left for
// the current interval: RemoveRateLimit waits that out instead of failing
// the test, and afterwards nothing is limited.
func TestRemoveRateLimitWaitsOutAnEmptyBucket(t *testing.T) {
	c := StartCluster(t)
	cl := c.NodeClient(t, c.Active(t))
	c.RateLimit(t, "q", 1, 3*time.Second, 0)
	limited := false
	for range 10 {
		if _, err := cl.Logical().Read("sys/mounts"); RateLimited(err) {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("a quota of 1 request per 3 s let 10 requests through")
	}
	c.RemoveRateLimit(t, "q")
	for i := range 10 {
		if _, err := cl.Logical().Read("sys/mounts"); err != nil {
			t.Fatalf("request %d after the quota was removed: %v", i, err)
		}
	}
}
