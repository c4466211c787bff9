package storm

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atrest/atrest/pkg/kms/vault"
	"github.com/hashicorp/vault/api"
)

// Plain is the fair ceiling of a storm: the same fleet on the same
// schedule (each node starting at a random time within opts.Spread),
// each node with a plain vault/api client of its own (its own TLS
// connection, as a machine of the fleet has; vault/api's defaults,
// which retry a failed connection, a 5xx or a 412 twice after 1-1.5 s),
// making its AppRole login and its batch decrypt, as fast as Vault
// answers. It differs from Run only in the client: no config.Parse, one
// address, vault/api's retries, no locked memory. Its Report's Stats
// count requests (a login and a decrypt per node, and each retry
// vault/api made of one), with the retries apart too.
func Plain(ctx context.Context, f *Fleet, opts Options) (*Report, error) {
	clients := make([]*api.Client, len(f.Nodes))
	retries := make([]atomic.Int64, len(f.Nodes))
	for i := range f.Nodes {
		conf := api.DefaultConfig()
		conf.Address = f.Addresses[0]
		next := conf.Backoff // asked only before a retry it makes
		if next == nil {
			return nil, fmt.Errorf("vault/api's default configuration has no Backoff to count retries by")
		}
		conf.Backoff = func(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
			retries[i].Add(1)
			return next(lo, hi, attempt, resp)
		}
		if opts.Timeout > 0 {
			conf.Timeout = opts.Timeout
		}
		if err := conf.ConfigureTLS(&api.TLSConfig{CACert: f.CAFile}); err != nil {
			return nil, err
		}
		c, err := api.NewClient(conf)
		if err != nil {
			return nil, err
		}
		c.ClearToken()
		clients[i] = c
	}
	defer func() {
		for _, c := range clients {
			c.CloneConfig().HttpClient.CloseIdleConnections()
		}
	}()
	results := schedule(f, opts, func(i int) (vault.Stats, error) {
		var st vault.Stats
		err := plainBoot(ctx, clients[i], f.Nodes[i], true, &st, &retries[i])
		return st, err
	})
	return report(results, len(f.Nodes[0].Volumes)), nil
}

// Ceiling is what Vault sustains with connections reused: workers
// goroutines share admin's keep-alive connections and send each node's
// requests once, back to back. With login false, admin's token sends
// every node's batch decrypt: the ceiling of Transit alone. With login
// true, each node's AppRole login and then its batch decrypt with the
// new token. It returns the nodes done and the time taken. It is not
// what a fleet can reach (each machine opens its own connection: see
// Plain), but what the cluster can.
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
				c := admin
				if login {
					var err error
					if c, err = admin.Clone(); err != nil {
						firstErr.CompareAndSwap(nil, err)
						failed.Add(1)
						continue
					}
				}
				if err := plainBoot(ctx, c, n, login, nil, nil); err != nil {
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

// plainBoot is a node's boot by the plainest client: c's AppRole login
// (with login), then one batch decrypt of its volumes; st, if not nil,
// counts the requests, with the retries vault/api made of each, which
// retried (if not nil) counts as they happen.
func plainBoot(ctx context.Context, c *api.Client, n *Node, login bool, st *vault.Stats, retried *atomic.Int64) error {
	// sent counts op once, and again for each retry vault/api made.
	sent := func(op string) {
		if st == nil {
			return
		}
		if st.ByOp == nil {
			st.ByOp = map[string]int64{}
		}
		var again int64
		if retried != nil {
			again = retried.Swap(0)
		}
		st.Requests += 1 + again
		st.Retries += again
		st.ByOp[op] += 1 + again
	}
	if login {
		sec, err := c.Logical().WriteWithContext(ctx, "auth/approle/login", map[string]any{"role_id": n.RoleID, "secret_id": n.secretID})
		sent("approle login")
		if err != nil {
			return err
		}
		if sec == nil || sec.Auth == nil {
			// vault/api answers a 404 with an empty body so.
			return fmt.Errorf("plain client: approle login answered without a token (an empty 404?)")
		}
		c.SetToken(sec.Auth.ClientToken)
		if st != nil {
			st.Logins++
		}
	}
	batch := make([]map[string]any, len(n.Volumes))
	for i, v := range n.Volumes {
		batch[i] = map[string]any{"ciphertext": v.Wrapped.Ciphertext, "context": b64(v.Context)}
	}
	sec, err := c.Logical().WriteWithContext(ctx, "transit/decrypt/"+n.Key, map[string]any{"batch_input": batch})
	sent("transit decrypt")
	if err != nil {
		return err
	}
	if sec == nil {
		return fmt.Errorf("plain client: transit decrypt answered without data (an empty 404?)")
	}
	if res, _ := sec.Data["batch_results"].([]any); len(res) != len(n.Volumes) {
		return fmt.Errorf("plain client: %d results for %d volumes", len(res), len(n.Volumes))
	}
	return nil
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
