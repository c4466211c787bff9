package storm

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms/backends"
	"github.com/atrest/atrest/pkg/kms/vault"
	"github.com/hashicorp/vault/api"
)

// Options shape a storm.
type Options struct {
	// Spread is the window in which the nodes start (uniformly at
	// random): a datacenter powering on; default 1s.
	Spread time.Duration
	// VaultYAML is extra text under each node's vault: section (timeout,
	// deadline, max_concurrency), indented by two spaces.
	VaultYAML string
	// OnDone, if set, is called after each node finished, with how many
	// have (a test kills the active node at 30 %).
	OnDone func(done int)
}

// Result is one node's boot.
type Result struct {
	Node string
	// Start and End are since the storm's start.
	Start, End time.Duration
	Err        error
	Stats      vault.Stats
}

// Report is a storm's outcome.
type Report struct {
	Nodes, Volumes int
	Failed         int
	// Wall is the time from the storm's start until every node that
	// succeeded held its secrets.
	Wall time.Duration
	// P50 and P99 are per-node times from its start to its secrets.
	P50, P99 time.Duration
	// Requests are all HTTP requests to Vault; MaxRequests the most any
	// one node made.
	Requests, MaxRequests             int64
	Retries, Failovers, RateLimited   int64
	NodesPerSecond, DecryptsPerSecond float64
	Results                           []Result
	FirstErrors                       []string
	requestsPerNode                   map[int64]int
	fastest, slowest                  time.Duration
	backoff                           time.Duration
	logins                            int64
	decryptCeiling, bootCeiling       float64 // nodes per second
}

// Run boots every node of f once, all starting within opts.Spread, and
// reports. Each node's configuration is parsed and its client built
// before the storm starts, so the figures are Vault's and the client's,
// not YAML's.
func Run(ctx context.Context, f *Fleet, opts Options) (*Report, error) {
	if opts.Spread <= 0 {
		opts.Spread = time.Second
	}
	sets := make([]*backends.Set, len(f.Nodes))
	for i, n := range f.Nodes {
		cfg, err := config.Parse([]byte(nodeConfig(f, n, opts.VaultYAML)), n.Name+".yaml")
		if err != nil {
			return nil, err
		}
		if sets[i], err = backends.Open(cfg, func(string) string { return "" }); err != nil {
			return nil, fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	defer func() {
		for _, s := range sets {
			_ = s.Close()
		}
	}()
	results := make([]Result, len(f.Nodes))
	var done atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now().Add(50 * time.Millisecond)
	for i, n := range f.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(t0.Add(rand.N(opts.Spread))))
			r := Result{Node: n.Name, Start: time.Since(t0)}
			r.Err = boot(ctx, sets[i], n)
			r.End = time.Since(t0)
			r.Stats = sets[i].Vault().Stats()
			results[i] = r
			if opts.OnDone != nil {
				opts.OnDone(int(done.Add(1)))
			}
		}()
	}
	wg.Wait()
	return report(results, len(f.Nodes[0].Volumes)), nil
}

// boot is what atrestd's unlock asks of the KMS for all of a node's
// volumes: one Set.Unwrap (pkg/volume's unwrapAll), every secret back.
func boot(ctx context.Context, s *backends.Set, n *Node) error {
	res := s.Unwrap(ctx, n.Volumes)
	var errs []error
	for i, r := range res {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("volume %s: %w", n.Volumes[i].Context, r.Err))
		} else if r.Plaintext.Len() != 32 {
			errs = append(errs, fmt.Errorf("volume %s: %d-byte secret", n.Volumes[i].Context, r.Plaintext.Len()))
		}
		r.Plaintext.Wipe()
	}
	if len(errs) > 0 {
		// Every volume of a node fails the same way when Vault does.
		return fmt.Errorf("%d of %d volumes: %w", len(errs), len(res), errs[0])
	}
	return nil
}

// nodeConfig is the node's atrest.yaml, as docs/vault.md and
// docs/fleet.md tell operators to write it.
func nodeConfig(f *Fleet, n *Node, extra string) string {
	var b strings.Builder
	b.WriteString("kms: vault-transit\nrecovery:\n  mode: none\nvault:\n  addresses:\n")
	for _, a := range f.Addresses {
		fmt.Fprintf(&b, "    - %s\n", a)
	}
	fmt.Fprintf(&b, "  ca_file: %s\n  auth:\n    method: approle\n    role_id: %s\n    secret_id_file: %s\n  transit:\n    key: %s\n%s",
		f.CAFile, n.RoleID, n.SecretIDFile, n.Key, extra)
	return b.String()
}

func report(results []Result, volumes int) *Report {
	r := &Report{Nodes: len(results), Volumes: volumes, Results: results, requestsPerNode: map[int64]int{}}
	var lat []time.Duration
	for _, x := range results {
		st := x.Stats
		r.Requests += st.Requests
		r.MaxRequests = max(r.MaxRequests, st.Requests)
		r.Retries += st.Retries
		r.Failovers += st.Failovers
		r.RateLimited += st.RateLimited
		r.backoff += st.Backoff
		r.logins += st.Logins
		r.requestsPerNode[st.Requests]++
		if x.Err != nil {
			r.Failed++
			if len(r.FirstErrors) < 3 {
				r.FirstErrors = append(r.FirstErrors, x.Node+": "+x.Err.Error())
			}
			continue
		}
		lat = append(lat, x.End-x.Start)
		r.Wall = max(r.Wall, x.End)
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		r.P50, r.P99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
		r.fastest, r.slowest = lat[0], lat[len(lat)-1]
		r.NodesPerSecond = float64(len(lat)) / r.Wall.Seconds()
		r.DecryptsPerSecond = r.NodesPerSecond * float64(volumes)
	}
	return r
}

// FailedWith counts the failed nodes whose error matches target.
func (r *Report) FailedWith(target error) int {
	n := 0
	for _, x := range r.Results {
		if x.Err != nil && errors.Is(x.Err, target) {
			n++
		}
	}
	return n
}

// SetCeilings records the two Ceilings measured in the same run:
// decrypt-only and login plus decrypt.
func (r *Report) SetCeilings(decrypt int, decryptTook time.Duration, boot int, bootTook time.Duration) {
	r.decryptCeiling = float64(decrypt) / decryptTook.Seconds()
	r.bootCeiling = float64(boot) / bootTook.Seconds()
}

// String is the report as docs/fleet.md quotes it.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nodes %d x %d volumes: failed %d, every node unlocked after %s\n", r.Nodes, r.Volumes, r.Failed, r.Wall.Round(time.Millisecond))
	fmt.Fprintf(&b, "per node: p50 %s, p99 %s, fastest %s, slowest %s\n", r.P50.Round(time.Millisecond), r.P99.Round(time.Millisecond), r.fastest.Round(time.Millisecond), r.slowest.Round(time.Millisecond))
	var counts []int64
	for k := range r.requestsPerNode {
		counts = append(counts, k)
	}
	slices.Sort(counts)
	var dist []string
	for _, k := range counts {
		dist = append(dist, fmt.Sprintf("%d req: %d nodes", k, r.requestsPerNode[k]))
	}
	fmt.Fprintf(&b, "vault requests: %d (%.2f per node, max %d; %s), logins %d\n", r.Requests, float64(r.Requests)/float64(r.Nodes), r.MaxRequests, strings.Join(dist, ", "), r.logins)
	fmt.Fprintf(&b, "retries %d, failovers %d, 429s %d, backoff waited %s in total\n", r.Retries, r.Failovers, r.RateLimited, r.backoff.Round(time.Millisecond))
	fmt.Fprintf(&b, "throughput: %.0f nodes/s (%.0f decrypts/s)", r.NodesPerSecond, r.DecryptsPerSecond)
	if r.decryptCeiling > 0 {
		fmt.Fprintf(&b, "\nplain client, same cluster: batch decrypt alone %.0f nodes/s (%.0f decrypts/s); login + batch decrypt %.0f nodes/s; the storm at %.0f %% of the latter",
			r.decryptCeiling, r.decryptCeiling*float64(r.Volumes), r.bootCeiling, 100*r.NodesPerSecond/r.bootCeiling)
	}
	b.WriteString("\n")
	for _, e := range r.FirstErrors {
		fmt.Fprintf(&b, "failed: %s\n", e)
	}
	return b.String()
}

// Ceiling is what a plain client reaches against the same cluster:
// vault/api clients, workers goroutines, each node's requests once, as
// fast as Vault answers (no retry, no failover, no backoff). With login
// false, one admin client sends every node's batch decrypt: the ceiling
// of Transit alone. With login true, each node's AppRole login and then
// its batch decrypt with the new token: what a node must do at boot, by
// the plainest client. It returns the nodes done and the time taken.
func Ceiling(ctx context.Context, admin *api.Client, f *Fleet, workers int, login bool) (int, time.Duration, error) {
	work := make(chan *Node)
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				if err := plainBoot(ctx, admin, n, login); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	for _, n := range f.Nodes {
		work <- n
	}
	close(work)
	wg.Wait()
	took := time.Since(start)
	if e, ok := firstErr.Load().(error); ok {
		return 0, took, fmt.Errorf("plain client: %d nodes failed: %w", failed.Load(), e)
	}
	return len(f.Nodes), took, nil
}

func plainBoot(ctx context.Context, admin *api.Client, n *Node, login bool) error {
	c := admin
	if login {
		var err error
		if c, err = admin.Clone(); err != nil {
			return err
		}
		sec, err := c.Logical().WriteWithContext(ctx, "auth/approle/login", map[string]any{"role_id": n.RoleID, "secret_id": n.secretID})
		if err != nil {
			return err
		}
		c.SetToken(sec.Auth.ClientToken)
	}
	batch := make([]map[string]any, len(n.Volumes))
	for i, v := range n.Volumes {
		batch[i] = map[string]any{"ciphertext": v.Wrapped.Ciphertext, "context": b64(v.Context)}
	}
	_, err := c.Logical().WriteWithContext(ctx, "transit/decrypt/"+n.Key, map[string]any{"batch_input": batch})
	return err
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
