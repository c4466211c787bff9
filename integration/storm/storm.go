package storm

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms/backends"
	"github.com/atrest/atrest/pkg/kms/vault"
)

// Options shape a storm.
type Options struct {
	// Spread is the window in which the nodes start (uniformly at
	// random): a datacenter powering on; default 1s.
	Spread time.Duration
	// VaultYAML is extra text under each node's vault: section (timeout,
	// deadline, max_concurrency), indented by two spaces.
	VaultYAML string
	// Timeout is the plain client's per-request timeout (Plain);
	// vault/api's default, 60 s, if 0. The storm's nodes take theirs
	// from VaultYAML.
	Timeout time.Duration
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

// Run boots every node of f once, all starting within opts.Spread, and
// reports. Each node's configuration is parsed and its client built
// before the storm starts, so the figures are Vault's and the client's,
// not YAML's.
func Run(ctx context.Context, f *Fleet, opts Options) (*Report, error) {
	sets := make([]*backends.Set, len(f.Nodes))
	for i, n := range f.Nodes {
		cfg, err := config.Parse([]byte(NodeConfig(f, n, opts.VaultYAML)), n.Name+".yaml")
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
	results := schedule(f, opts, func(i int) (vault.Stats, error) {
		err := boot(ctx, sets[i], f.Nodes[i])
		return sets[i].Vault().Stats(), err
	})
	return report(results, len(f.Nodes[0].Volumes)), nil
}

// schedule starts one goroutine per node of f at a uniformly random time
// within opts.Spread, runs boot for it and collects the Results.
func schedule(f *Fleet, opts Options, boot func(i int) (vault.Stats, error)) []Result {
	if opts.Spread <= 0 {
		opts.Spread = time.Second
	}
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
			r.Stats, r.Err = boot(i)
			r.End = time.Since(t0)
			results[i] = r
			if opts.OnDone != nil {
				opts.OnDone(int(done.Add(1)))
			}
		}()
	}
	wg.Wait()
	return results
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

// NodeConfig is the node's atrest.yaml, as docs/vault.md and
// docs/fleet.md tell operators to write it, with extra under its vault:
// section (Options.VaultYAML).
func NodeConfig(f *Fleet, n *Node, extra string) string {
	var b strings.Builder
	b.WriteString("kms: vault-transit\nrecovery:\n  mode: none\nvault:\n  addresses:\n")
	for _, a := range f.Addresses {
		fmt.Fprintf(&b, "    - %s\n", a)
	}
	fmt.Fprintf(&b, "  ca_file: %s\n  auth:\n    method: approle\n    role_id: %s\n    secret_id_file: %s\n  transit:\n    key: %s\n%s",
		f.CAFile, n.RoleID, n.SecretIDFile, n.Key, extra)
	return b.String()
}
