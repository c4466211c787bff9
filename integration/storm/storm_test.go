package storm_test

import (
	"context"
	"errors"
	"os"
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
	// A dead node costs a refused connection or the 3 s connect timeout
	// whatever vault.timeout is; a long timeout keeps a node whose
	// request queues behind a thousand logins from sending it again
	// (docs/fleet.md), and a long deadline lets a boot outlast an
	// election.
	opts := storm.Options{VaultYAML: "  timeout: 30s\n  deadline: 120s\n"}

	t.Run("storm with one revoked node", func(t *testing.T) {
		all := *fleet
		all.Nodes = append(append([]*storm.Node(nil), fleet.Nodes...), lost.Nodes[0])
		r, err := storm.Run(ctx, &all, opts)
		if err != nil {
			t.Fatal(err)
		}
		decrypts, decryptTook, err := storm.Ceiling(ctx, admin, fleet, 64, false)
		if err != nil {
			t.Fatal(err)
		}
		boots, bootTook, err := storm.Ceiling(ctx, admin, fleet, 64, true)
		if err != nil {
			t.Fatal(err)
		}
		r.SetCeilings(decrypts, decryptTook, boots, bootTook)
		t.Logf("\n%s", r)
		revoked := r.Results[len(r.Results)-1]
		if revoked.Err == nil || !errors.Is(revoked.Err, kms.ErrAuth) || !strings.Contains(revoked.Err.Error(), "kms auth") {
			t.Errorf("revoked node: %v, want a kms auth failure", revoked.Err)
		}
		if r.Failed != 1 {
			t.Errorf("%d nodes failed, want only the revoked one: %v", r.Failed, r.FirstErrors)
		}
		for _, x := range r.Results[:m] {
			if x.Stats.Requests > 2 {
				t.Errorf("%s: %d Vault requests (%+v), want its login and one batch decrypt", x.Node, x.Stats.Requests, x.Stats)
			}
		}
	})

	t.Run("active node killed at 30 %", func(t *testing.T) {
		if tg.cluster == nil {
			t.Skip("not killing a node of your own cluster")
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
		killed := tg.cluster.KillActive(t)
		killedAt := time.Now()
		now := tg.cluster.Active(t)
		election := time.Since(killedAt)
		o := <-res
		if o.err != nil {
			t.Fatal(o.err)
		}
		t.Logf("node %d killed after %d of %d nodes unlocked; node %d active %s later\n%s", killed, max(1, m*3/10), m, now, election.Round(100*time.Millisecond), o.r)
		if o.r.Failed != 0 {
			t.Errorf("%d nodes failed across the failover: %v", o.r.Failed, o.r.FirstErrors)
		}
	})
}
