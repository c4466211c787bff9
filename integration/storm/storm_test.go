package storm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/integration/storm"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/hashicorp/vault/api"
)

func TestMain(m *testing.M) { os.Exit(vaulttest.Main(m)) }

// Environment: the storm's size, and optionally a cluster of your own
// (docs/fleet.md) instead of vaulttest's three nodes.
const (
	envNodes     = "ATREST_STORM_NODES"   // default 100
	envVolumes   = "ATREST_STORM_VOLUMES" // default 24
	envAddrs     = "ATREST_STORM_VAULT_ADDRS"
	envCACert    = "ATREST_STORM_VAULT_CACERT"
	envTokenFile = "ATREST_STORM_VAULT_TOKEN_FILE"
	envTokenType = "ATREST_STORM_TOKEN_TYPE" // service (default) or batch
	envRounds    = "ATREST_STORM_ROUNDS"     // storm and plain client pairs, default 1
)

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// target is the cluster the storm runs against.
type target struct {
	addrs  []string
	caFile string
	admin  func(addr string) *api.Client
	// cluster is vaulttest's, nil for a cluster of your own (then no
	// node is killed).
	cluster *vaulttest.Cluster
}

func clusterTarget(t *testing.T) target {
	t.Helper()
	if addrs := os.Getenv(envAddrs); addrs != "" {
		tok, err := os.ReadFile(os.Getenv(envTokenFile))
		if err != nil {
			t.Fatalf("%s: %v", envTokenFile, err)
		}
		tg := target{addrs: strings.Split(addrs, ","), caFile: os.Getenv(envCACert)}
		tg.admin = func(addr string) *api.Client {
			conf := api.DefaultConfig()
			conf.Address = addr
			if err := conf.ConfigureTLS(&api.TLSConfig{CACert: tg.caFile}); err != nil {
				t.Fatal(err)
			}
			c, err := api.NewClient(conf)
			if err != nil {
				t.Fatal(err)
			}
			c.SetToken(strings.TrimSpace(string(tok)))
			return c
		}
		return tg
	}
	c := vaulttest.StartCluster(t)
	return target{addrs: c.Addresses, caFile: c.CAFile, cluster: c, admin: func(addr string) *api.Client {
		for i, a := range c.Addresses {
			if a == addr {
				return c.NodeClient(t, i)
			}
		}
		t.Fatalf("no node %s", addr)
		return nil
	}}
}

// The boot storm (docs/fleet.md): M nodes, 24 volumes each, starting
// within one second. What a fleet's operator would notice: a node that
// fails to unlock, or a node that costs Vault more than its login and
// its one batch decrypt. Timings are reported, not asserted.
func TestStorm(t *testing.T) {
	vaulttest.Binary(t) // skips in -short
	m, volumes := envInt(t, envNodes, 100), envInt(t, envVolumes, 24)
	rounds := envInt(t, envRounds, 1)
	if err := storm.RaiseFileLimit(m + 1); err != nil {
		t.Log(err)
	}
	tg := clusterTarget(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	admin := tg.admin(tg.addrs[0])
	start := time.Now()
	tokenType := os.Getenv(envTokenType)
	if tokenType == "" {
		tokenType = "service"
	}
	policy := vaulttest.Policies(t)["atrest-node"]
	fleet, err := storm.Provision(ctx, admin, tg.addrs, tg.caFile, policy, tokenType, "storm", m, volumes, 8, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// One node lost and revoked by its operator: its secret-id destroyed.
	lost, err := storm.Provision(ctx, admin, tg.addrs, tg.caFile, policy, tokenType, "lost", 1, volumes, 1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := lost.Nodes[0].Revoke(ctx, admin); err != nil {
		t.Fatal(err)
	}
	t.Logf("provisioned %d nodes (%s tokens) in %s", m+1, tokenType, time.Since(start).Round(time.Millisecond))
	if tg.cluster != nil {
		// As in production, Vault audits every request (docs/fleet.md):
		// the failover below is read back from the logs.
		tg.cluster.EnableAudit(t)
	}
	// A dead node costs a refused connection or the 3 s connect timeout
	// whatever vault.timeout is; a long timeout keeps a node whose
	// request queues behind a thousand logins from sending it again
	// (docs/fleet.md), and a long deadline lets a boot outlast an
	// election (election_wait is left at its default, as an operator
	// would: the client learns the election's end from the cluster).
	// The queue at Vault grows with M (about 200 node boots a second
	// here, fewer when cold): the request timeout stays above it (20
	// ms per node, at least 30 s), for the plain client too.
	timeout := max(30*time.Second, time.Duration(m)*20*time.Millisecond)
	opts := storm.Options{Timeout: timeout, VaultYAML: fmt.Sprintf("  timeout: %s\n  deadline: %s\n", timeout, 4*timeout)}
	var steadyP99 []time.Duration // of the storms without failover
	var steadyNPS []float64       // their nodes per second

	t.Run("storm with one revoked node", func(t *testing.T) {
		all := *fleet
		all.Nodes = append(append([]*storm.Node(nil), fleet.Nodes...), lost.Nodes[0])
		// The first pass over a freshly provisioned fleet costs Vault
		// 1.5 to 2.5 times the CPU of every later one (measured here):
		// a pass of the keep-alive client warms it for both compared
		// clients below.
		cpu := tg.cpu(t)
		boots, bootTook, err := storm.Ceiling(ctx, admin, fleet, 64, true)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("first pass (keep-alive client, login + batch decrypt): %.0f nodes/s, %s", float64(boots)/bootTook.Seconds(), tg.cpu(t).since(cpu).per(m))
		// The storm and its fair ceiling, the plain client, each make a
		// warm-up pass (not counted: a client's first pass after the
		// keep-alive one ran at half the speed of the later ones at
		// M = 1,000, whichever client it was), then run in ABBA order
		// in each round (storm, plain, plain, storm; then plain, storm,
		// storm, plain), so that neither always meets a Vault warmed,
		// or burdened, by the other's tokens and leases, nor always
		// runs first or last. The figure is the median of the storm's
		// passes over the plain client's; a round compares the sums of
		// its two passes of each.
		var stormNPS, plainNPS, ratios []float64
		var lines []string
		var wires [2]storm.Wire  // the warm-up passes': storm, plain
		var warmRetries [2]int64 // in the warm-up passes: storm, plain
		pass := func(stormPass, count bool) float64 {
			ctx := ctx
			if !count {
				ctx = wires[map[bool]int{true: 0, false: 1}[stormPass]].Trace(ctx)
			}
			cpu := tg.cpu(t)
			if stormPass {
				r, err := storm.Run(ctx, &all, opts)
				if err != nil {
					t.Fatal(err)
				}
				lines = append(lines, fmt.Sprintf("storm:\n%s%s", r, tg.cpu(t).since(cpu).per(m+1)))
				checkSteady(t, r, m)
				if !count {
					warmRetries[0] = r.Retries
				}
				if count {
					stormNPS = append(stormNPS, r.NodesPerSecond)
					steadyP99 = append(steadyP99, r.P99)
					steadyNPS = append(steadyNPS, r.NodesPerSecond)
				}
				return r.NodesPerSecond
			}
			plain, err := storm.Plain(ctx, fleet, opts)
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, fmt.Sprintf("plain vault/api nodes, same schedule, own TLS each:\n%s%s", plain, tg.cpu(t).since(cpu).per(m)))
			if plain.Failed != 0 {
				t.Errorf("plain client: %d nodes failed: %v", plain.Failed, plain.FirstErrors)
			}
			if count {
				plainNPS = append(plainNPS, plain.NodesPerSecond)
			} else {
				warmRetries[1] = plain.Retries
			}
			return plain.NodesPerSecond
		}
		ws, wp := pass(true, false), pass(false, false)
		t.Logf("warm-up passes (not counted): storm %.0f nodes/s, plain client %.0f nodes/s:\n%s\non the wire: storm %s; plain client %s", ws, wp, strings.Join(lines, "\n"), &wires[0], &wires[1])
		checkWire(t, &wires, m, warmRetries)
		for round := 1; round <= rounds; round++ {
			lines = nil
			var stormSum, plainSum float64 // nodes/s summed over the round
			active := tg.active(t)
			stormFirst := round%2 == 1
			for _, s := range []bool{stormFirst, !stormFirst, !stormFirst, stormFirst} {
				if s {
					stormSum += pass(true, true)
				} else {
					plainSum += pass(false, true)
				}
			}
			ratios = append(ratios, stormSum/plainSum)
			t.Logf("round %d of %d (%s; active node %s):\n%s\nthe storm at %.0f %% of the plain nodes' throughput (sum of two passes each)",
				round, rounds, map[bool]string{true: "storm, plain, plain, storm", false: "plain, storm, storm, plain"}[stormFirst], active,
				strings.Join(lines, "\n"), 100*ratios[len(ratios)-1])
		}
		slices.Sort(ratios)
		decrypts, decryptTook, err := storm.Ceiling(ctx, admin, fleet, 64, false)
		if err != nil {
			t.Fatal(err)
		}
		if boots, bootTook, err = storm.Ceiling(ctx, admin, fleet, 64, true); err != nil {
			t.Fatal(err)
		}
		t.Logf("the storm at %.0f %% of the plain nodes' throughput (median of its %d passes, %.0f nodes/s, over the plain client's, %.0f nodes/s; rounds %.0f to %.0f %%)\nkeep-alive ceilings (64 workers reusing connections): batch decrypt alone %.0f nodes/s (%.0f decrypts/s); login + batch decrypt %.0f nodes/s",
			100*median(stormNPS)/median(plainNPS), len(stormNPS), median(stormNPS), median(plainNPS), 100*ratios[0], 100*ratios[len(ratios)-1],
			float64(decrypts)/decryptTook.Seconds(), float64(decrypts*volumes)/decryptTook.Seconds(), float64(boots)/bootTook.Seconds())
	})

	t.Run("active node killed at 30 %", func(t *testing.T) {
		if tg.cluster == nil {
			t.Skip("not killing a node of your own cluster")
		}
		c := tg.cluster
		// Each node's audit log so far: the storm's part is what follows.
		sizes := make([]int64, len(c.Nodes))
		for i := range c.Nodes {
			var err error
			if sizes[i], err = storm.Size(c.AuditFile(i)); err != nil {
				t.Fatal(err)
			}
		}
		at30 := make(chan struct{})
		opts := opts
		opts.OnDone = func(done int) {
			if done == max(1, m*3/10) {
				close(at30)
			}
		}
		type out struct {
			r   *storm.Report
			err error
		}
		res := make(chan out, 1)
		go func() {
			r, err := storm.Run(ctx, fleet, opts)
			res <- out{r, err}
		}()
		<-at30
		killed := c.KillActive(t)
		killedAt := time.Now()
		// The election's time: from the kill until a surviving node
		// reports itself active (polled every 20 ms).
		now := c.Active(t)
		election := time.Since(killedAt)
		o := <-res
		if o.err != nil {
			t.Fatal(o.err)
		}
		r := o.r
		msg := fmt.Sprintf("node %d killed after %d of %d nodes unlocked; node %d active %s later (the election)\n%s", killed, max(1, m*3/10), m, now, election.Round(10*time.Millisecond), r)
		if len(steadyP99) > 0 {
			base := median(steadyP99)
			grew := r.P99 - base
			msg += fmt.Sprintf("p99 %s, grew by %s over the storms without the kill (median p99 %s): the election (%s) plus %s (the one retry, queued at the new active node)",
				r.P99.Round(time.Millisecond), grew.Round(time.Millisecond), base.Round(time.Millisecond), election.Round(10*time.Millisecond), (grew - election).Round(time.Millisecond))
		}
		t.Log(msg)
		if r.Failed != 0 {
			t.Errorf("%d nodes failed across the failover: %v", r.Failed, r.FirstErrors)
		}
		// What the client's counters (atrestd's metrics) show of a
		// failover: nodes that waited for the election, asking the
		// survivors' sys/health meanwhile, and the killed node's refused
		// connections.
		if r.ElectionWaits == 0 || r.Unreached == 0 || r.Failovers == 0 || r.Probes == 0 {
			t.Errorf("the failover does not show in the counters: election waits %d, refused connections %d, failovers %d, probes %d", r.ElectionWaits, r.Unreached, r.Failovers, r.Probes)
		}
		// No node paid more than one request for it (its login, its
		// decrypt, one retry), unless its retry met the election again
		// (counted as a poll; none expected: the retry goes to the node
		// that reported itself active) or a standby that does not
		// forward yet answered 307 (a node that started after the
		// election, counted apart). Probes are not requests.
		for _, x := range r.Results {
			if st := x.Stats; st.Requests > 3+st.ElectionPolls+st.Redirects {
				t.Errorf("%s: %d Vault requests across the failover (%+v), want at most its login, its decrypt and one retry (plus %d polls and %d standby 307s)", x.Node, st.Requests, st, st.ElectionPolls, st.Redirects)
			}
		}
		checkAudit(t, c, sizes, fleet, r, killed, now, killedAt)
	})
	t.Run("rate-limit quota below the demand", func(t *testing.T) {
		if tg.cluster == nil {
			t.Skip("not setting a quota on your own cluster")
		}
		// All simulated nodes share one client address, so one bucket:
		// a quarter of the storm's demand, its 2 requests per node at
		// the rate the storms above reached (m/2 a second without
		// them): a quota of M/2 was not reached at all by a storm of
		// 85 nodes/s on this machine at a load average of 54.
		// Each node still finds the killed node dead first, but not a
		// standby that has not yet connected to the new active node
		// (which answers 307 or 500 for a while after an election: a
		// request more, not the quota's doing; docs/fleet.md).
		tg.cluster.Settle(t)
		rate := m / 2
		if len(steadyNPS) > 0 {
			rate = int(2 * median(steadyNPS) / 4)
		}
		rate = max(10, rate)
		tg.cluster.RateLimit(t, "storm", float64(rate), time.Second, 0)
		defer tg.cluster.RemoveRateLimit(t, "storm")
		before := tg.active(t)
		r, err := storm.Run(ctx, fleet, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("quota %d requests/s for %d nodes' %d requests (at least %.1f s; active node %s before, %s after):\n%s", rate, m, 2*m, float64(2*m)/float64(rate)-1, before, tg.active(t), r)
		if r.Failed != 0 {
			t.Errorf("%d nodes failed under the quota: %v", r.Failed, r.FirstErrors)
		}
		// The quota shows in the counters, and no node looped: every
		// request beyond its login and decrypt followed a 429 and its
		// wait, or a standby's 307 (counted apart), or an election the
		// node waited out (on this loaded 2-core machine the active
		// node may lose its leadership under the storm: docs/fleet.md).
		if r.RateLimited == 0 || r.Backoff() == 0 {
			t.Errorf("the quota does not show in the counters: %d answers of 429, %s of backoff", r.RateLimited, r.Backoff())
		}
		for _, x := range r.Results {
			st := x.Stats
			elections := st.ElectionWaits + st.ElectionPolls
			if st.Requests > 2+st.RateLimited+st.Redirects+elections || st.Retries > st.RateLimited+elections {
				t.Errorf("%s: %d requests, %d retries for %d answers of 429, %d of 307 and %d elections (%+v)", x.Node, st.Requests, st.Retries, st.RateLimited, st.Redirects, elections, st)
			}
		}
	})
}

// median is the middle of xs (sorted), the mean of the two middle ones
// for an even count.
func median[T float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// checkSteady checks a storm without failover: only the revoked node (the
// last) failed, with "kms auth" after its one login, and every other node
// made its login and one batch decrypt, nothing more.
func checkSteady(t *testing.T, r *storm.Report, m int) {
	t.Helper()
	revoked := r.Results[len(r.Results)-1]
	if revoked.Err == nil || !errors.Is(revoked.Err, kms.ErrAuth) || !strings.Contains(revoked.Err.Error(), "kms auth") {
		t.Errorf("revoked node: %v, want a kms auth failure", revoked.Err)
	}
	if revoked.Stats.Requests != 1 {
		t.Errorf("revoked node: %d requests (%+v), want its one refused login", revoked.Stats.Requests, revoked.Stats)
	}
	if r.Failed != 1 {
		t.Errorf("%d nodes failed, want only the revoked one: %v", r.Failed, r.FirstErrors)
	}
	for _, x := range r.Results[:m] {
		if st := x.Stats; st.Requests > 2 || st.ByOp["approle login"] != 1 || st.ByOp["transit decrypt"] != 1 {
			t.Errorf("%s: %d Vault requests (%+v), want its login and one batch decrypt", x.Node, st.Requests, st)
		}
	}
}

// active names the active node of vaulttest's cluster ("?" on yours).
func (tg target) active(t *testing.T) string {
	if tg.cluster == nil {
		return "?"
	}
	return strconv.Itoa(tg.cluster.Active(t))
}

// checkAudit checks what the cluster's audit logs say of a storm across
// the kill of its active node: each node's batch decrypt audited by the
// old active node before the kill or by the new one after it (the third
// node, a standby, forwards and audits none), and the logs' union
// accounting for every node of the fleet: once each, at most as often
// as the node's client sent it (a request cut by the kill may have run).
func checkAudit(t *testing.T, c *vaulttest.Cluster, sizes []int64, fleet *storm.Fleet, r *storm.Report, old, now int, killedAt time.Time) {
	t.Helper()
	logs := make([]*storm.Audited, len(c.Nodes))
	for i := range c.Nodes {
		a, err := storm.ReadAudit(c.AuditFile(i), sizes[i], fleet)
		if err != nil {
			t.Fatal(err)
		}
		logs[i] = a
	}
	var lines []string
	for i, a := range logs {
		lines = append(lines, fmt.Sprintf("node %d: %d decrypts of %d nodes, %s to %s", i, a.Total(), len(a.Decrypts), a.First.Format("15:04:05.000"), a.Last.Format("15:04:05.000")))
	}
	t.Logf("audit logs (kill at %s):\n%s", killedAt.Format("15:04:05.000"), strings.Join(lines, "\n"))
	before, after := logs[old], logs[now]
	if before.Total() == 0 || !before.Last.Before(killedAt) {
		t.Errorf("old active node %d: %d decrypts audited, the last at %s, want some, all before the kill at %s", old, before.Total(), before.Last, killedAt)
	}
	if after.Total() == 0 || !after.First.After(killedAt) {
		t.Errorf("new active node %d: %d decrypts audited, the first at %s, want some, all after the kill at %s", now, after.Total(), after.First, killedAt)
	}
	for i, a := range logs {
		if i != old && i != now && a.Total() != 0 {
			t.Errorf("standby node %d audited %d decrypts, want none (a standby forwards)", i, a.Total())
		}
	}
	for _, x := range r.Results {
		got := before.Decrypts[x.Node] + after.Decrypts[x.Node]
		if sent := x.Stats.ByOp["transit decrypt"]; got < 1 || int64(got) > sent {
			t.Errorf("%s: its batch decrypt audited %d times (old active %d, new %d), sent %d times: want once, at most as often as sent", x.Node, got, before.Decrypts[x.Node], after.Decrypts[x.Node], sent)
		}
	}
}

// checkWire: both clients asked Vault the same of the wire (docs/fleet.md,
// "the plain client"): one TLS handshake per node (the storm's revoked
// node makes its one too; a retry of either client after a broken
// connection opens another), none resumed (each machine of a fleet has its own
// connection), the same TLS version, key exchange and HTTP protocol, and
// the decrypt on the login's connection.
func checkWire(t *testing.T, w *[2]storm.Wire, m int, retries [2]int64) {
	t.Helper()
	for i, want := range []int{m + 1, m} {
		name := []string{"storm", "plain client"}[i]
		extra := int(retries[i])
		if w[i].Handshakes < want || w[i].Handshakes > want+extra || w[i].Resumed != 0 {
			t.Errorf("%s: %d TLS handshakes (%d resumed) for %d nodes and %d retries, want one each, none resumed", name, w[i].Handshakes, w[i].Resumed, want, extra)
		}
		if w[i].Conns-w[i].Reused != w[i].Handshakes {
			t.Errorf("%s: %d new connections for %d TLS handshakes", name, w[i].Conns-w[i].Reused, w[i].Handshakes)
		}
	}
	if a, b := w[0].Negotiated(), w[1].Negotiated(); a != b {
		t.Errorf("the storm negotiated %s, the plain client %s: the comparison would be one of wire formats", a, b)
	}
}
