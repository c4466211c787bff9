package storm

import (
	"context"
	"encoding/base64"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atrest/atrest/pkg/kms/vault"
	"github.com/hashicorp/vault/api"
)

// Plain is the fair ceiling of a storm: the same fleet on the same
// schedule (each node starting at a random time within opts.Spread),
// each node with a plain vault/api client of its own (its own TLS
// connection, as a machine of the fleet has; vault/api's defaults but
// no retries), making its AppRole login and its batch decrypt, as fast
// as Vault answers. It differs from Run only in the client: no
// config.Parse, no failover, no retry, no locked memory. Its Report's
// Stats count requests (a login and a decrypt per node).
func Plain(ctx context.Context, f *Fleet, opts Options) (*Report, error) {
	clients := make([]*api.Client, len(f.Nodes))
	for i := range f.Nodes {
		conf := api.DefaultConfig()
		conf.Address = f.Addresses[0]
		conf.MaxRetries = 0
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
		err := plainBoot(ctx, clients[i], f.Nodes[i], true, &st)
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
				if err := plainBoot(ctx, c, n, login, nil); err != nil {
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
// counts the requests.
func plainBoot(ctx context.Context, c *api.Client, n *Node, login bool, st *vault.Stats) error {
	count := func(op string) {
		if st != nil {
			if st.ByOp == nil {
				st.ByOp = map[string]int64{}
			}
			st.Requests++
			st.ByOp[op]++
		}
	}
	if login {
		count("approle login")
		sec, err := c.Logical().WriteWithContext(ctx, "auth/approle/login", map[string]any{"role_id": n.RoleID, "secret_id": n.secretID})
		if err != nil {
			return err
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
	count("transit decrypt")
	sec, err := c.Logical().WriteWithContext(ctx, "transit/decrypt/"+n.Key, map[string]any{"batch_input": batch})
	if err != nil {
		return err
	}
	if res, _ := sec.Data["batch_results"].([]any); len(res) != len(n.Volumes) {
		return fmt.Errorf("plain client: %d results for %d volumes", len(res), len(n.Volumes))
	}
	return nil
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
