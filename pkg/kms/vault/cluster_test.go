package vault_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/vault"
)

// clusterTransit is a node of the fleet logged in through AppRole to
// every address of the cluster.
func clusterTransit(t *testing.T, c *vaulttest.Cluster, n vaulttest.Node, deadline time.Duration) *vault.Transit {
	t.Helper()
	cfg := appRoleConfig(c.Server, n)
	cfg.Address, cfg.Addresses = "", c.Addresses
	cfg.Timeout, cfg.Deadline = 2*time.Second, deadline
	cfg.Backoff = vault.Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	return newTransit(t, newClient(t, cfg), n.Key)
}

// wrapVolumes wraps one secret per volume context, as format does.
func wrapVolumes(t *testing.T, tr *vault.Transit, n int) []kms.UnwrapRequest {
	t.Helper()
	var reqs []kms.UnwrapRequest
	for i := range n {
		vol := fmt.Sprintf("0b8e3c52-1d2f-4e7a-9a55-%012d", i)
		w, err := kms.Wrap(ctx(t), tr, vol, random(t, 32))
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, kms.UnwrapRequest{Wrapped: w, Context: vol})
	}
	return reqs
}

// unwrapAll is one boot's batch unlock: every item must come back.
func unwrapAll(tr *vault.Transit, reqs []kms.UnwrapRequest) error {
	res, err := tr.Unwrap(context.Background(), reqs)
	if err != nil {
		return err
	}
	for i, r := range res {
		if r.Err != nil {
			return fmt.Errorf("item %d: %w", i, r.Err)
		}
		r.Plaintext.Wipe()
	}
	return nil
}

// A fleet's life on a Vault cluster, one cluster for all of it to keep
// CI short: a rate-limit quota below the demand, then the active node
// killed in the middle of unlocks, then a second node killed (quorum
// lost), then the last node sealed.
func TestClusterQuotaFailoverAndSeal(t *testing.T) {
	c := vaulttest.StartCluster(t)
	n := vaulttest.Provision(t, c.Server, "fleet1", nil)
	admin := clusterTransit(t, c, n, time.Minute)
	reqs := wrapVolumes(t, admin, 24)

	t.Run("429 under a quota: every node succeeds after backoff", func(t *testing.T) {
		// 20 nodes, each a login and a decrypt, against 10 requests a
		// second from this (one) client address.
		c.RateLimit(t, "storm", 10, time.Second, 0)
		defer c.RemoveRateLimit(t, "storm")
		var wg sync.WaitGroup
		errs := make([]error, 20)
		clients := make([]*vault.Transit, 20)
		for i := range clients {
			clients[i] = clusterTransit(t, c, n, time.Minute)
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = unwrapAll(clients[i], reqs)
			}()
		}
		wg.Wait()
		var limited int64
		var waited time.Duration
		for i, cl := range clients {
			if errs[i] != nil {
				t.Errorf("node %d failed under the quota: %v", i, errs[i])
			}
			st := cl.Client().Stats()
			limited += st.RateLimited
			waited += st.Backoff
		}
		t.Logf("429 answers: %d, total backoff %s", limited, waited)
		if limited == 0 || waited == 0 {
			t.Errorf("no 429 counted (%d) or no backoff (%s): the quota was not felt", limited, waited)
		}
	})

	t.Run("active node killed mid-way: decrypts succeed after the election", func(t *testing.T) {
		tr := clusterTransit(t, c, n, time.Minute)
		var killed sync.WaitGroup
		killed.Add(1)
		errc := make(chan error, 1)
		go func() {
			// Unlocks keep coming: before, during and after the election.
			for i := 0; ; i++ {
				if err := unwrapAll(tr, reqs); err != nil {
					errc <- fmt.Errorf("unlock %d: %w", i, err)
					return
				}
				if i == 3 {
					killed.Wait()
				}
				if i == 10 {
					errc <- nil
					return
				}
			}
		}()
		old := c.KillActive(t)
		killed.Done()
		if err := <-errc; err != nil {
			t.Fatalf("after killing node %d: %v", old, err)
		}
		now := c.Active(t)
		st := tr.Client().Stats()
		t.Logf("node %d killed, node %d active; client stats %+v", old, now, st)
		if st.Failovers+st.Retries == 0 {
			t.Error("no failover or retry counted across the kill")
		}
		// The killed active node: its refused port costs no request, and
		// the unlock that found it dead waited for the election once
		// instead of asking the standbys every second.
		if st.ElectionWaits == 0 || st.Unreached == 0 {
			t.Errorf("client stats %+v: no election wait or refused connection counted", st)
		}
		// It learnt the election's end from the survivors' sys/health
		// (probes, not requests) and sent one retry: one login and 11
		// decrypts, plus that retry (and a standby's 307, if its retry
		// met a standby that did not forward yet).
		if st.Probes == 0 || st.Requests > 1+11+1+st.ElectionPolls+st.Redirects {
			t.Errorf("client stats %+v: want probes, and at most one request more than the login and 11 decrypts", st)
		}
	})

	t.Run("quorum lost: its own error within the deadline", func(t *testing.T) {
		const deadline = 4 * time.Second
		tr := clusterTransit(t, c, n, deadline)
		c.KillActive(t) // one of three left: no election can succeed
		start := time.Now()
		err := unwrapAll(tr, reqs)
		wantUnavailable(t, err, "leader election under way?", time.Since(start), deadline)
	})

	t.Run("sealed cluster: its own error within the deadline", func(t *testing.T) {
		const deadline = 3 * time.Second
		tr := clusterTransit(t, c, n, deadline)
		c.Seal(t)
		start := time.Now()
		err := unwrapAll(tr, reqs)
		wantUnavailable(t, err, "vault is sealed (HTTP 503) at ", time.Since(start), deadline)
	})
}

// A standby killed under a client that used it (a client cannot tell a
// forwarding standby from the active node): the unlocks go on, the one
// cut by the kill retried once, on the active node that the probes of
// the other two find at once, with no election to wait for.
func TestClusterStandbyKilledUnderAClient(t *testing.T) {
	c := vaulttest.StartCluster(t)
	n := vaulttest.Provision(t, c.Server, "fleet2", nil)
	active := c.Active(t)
	standby := (active + 1) % len(c.Addresses)
	cfg := appRoleConfig(c.Server, n)
	cfg.Address = ""
	cfg.Addresses = append([]string{c.Addresses[standby]}, slices.Delete(slices.Clone(c.Addresses), standby, standby+1)...)
	cfg.Timeout, cfg.Deadline = 2*time.Second, time.Minute
	tr := newTransit(t, newClient(t, cfg), n.Key)
	reqs := wrapVolumes(t, tr, 24)
	before := tr.Client().Stats()
	errc := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			if err := unwrapAll(tr, reqs); err != nil {
				errc <- fmt.Errorf("unlock %d: %w", i, err)
				return
			}
			select {
			case <-stop:
				errc <- nil
				return
			default:
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	c.Kill(t, standby)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	if err := <-errc; err != nil {
		t.Fatalf("after killing standby %d: %v", standby, err)
	}
	st := tr.Client().Stats()
	t.Logf("standby %d killed under the client; active node %d; client stats %+v (before the unlocks %+v)", standby, active, st, before)
	if now := c.Active(t); now != active {
		t.Fatalf("active node %d, was %d: the kill of a standby made an election", now, active)
	}
	// At most one request more than the unlocks, and no second wait:
	// the probes found the active node alive.
	if st.ElectionPolls != 0 || st.ElectionWaits > 1 || st.Retries > 2 {
		t.Errorf("client stats %+v: want at most one election wait, no poll, at most the cut request's two retries", st)
	}
	if st.Unreached == 0 {
		t.Errorf("client stats %+v: the killed standby's refused connection not counted", st)
	}
}

// Every address wrong (nothing listens): an unavailable error naming
// each address's cause, within the deadline, not a hang per address.
func TestClusterAllAddressesWrong(t *testing.T) {
	var addrs []string
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, "https://"+ln.Addr().String())
		ln.Close()
	}
	const deadline = 2 * time.Second
	cl := newClient(t, vault.Config{
		Addresses: addrs, Deadline: deadline, Timeout: time.Second,
		Auth:    vault.Auth{TokenFile: tokenFile(t, "hvs.none")},
		Backoff: vault.Backoff{Initial: 50 * time.Millisecond, Max: 400 * time.Millisecond},
	})
	tr := newTransit(t, cl, "atrest-fleet")
	start := time.Now()
	_, err := tr.Unwrap(ctx(t), []kms.UnwrapRequest{{Wrapped: kms.Wrapped{Backend: vault.BackendTransit, Key: "atrest-fleet", KeyVersion: 1, Ciphertext: "vault:v1:AAAA"}, Context: "vol"}})
	wantUnavailable(t, err, "connection refused on every address (3)", time.Since(start), deadline)
	if st := cl.Stats(); st.Failovers == 0 {
		t.Errorf("stats %+v: the other addresses were not tried", st)
	}
}

// vault.addresses is validated: no duplicates, only URLs.
func TestClusterAddressesValidated(t *testing.T) {
	for _, tc := range []struct {
		cfg  vault.Config
		want string
	}{
		{vault.Config{Addresses: []string{"https://a:8200", "https://a:8200/"}}, "listed twice"},
		{vault.Config{Address: "https://a:8200", Addresses: []string{"b:8200"}}, `"b:8200" is not an http(s) URL`},
		{vault.Config{}, "no address"},
	} {
		tc.cfg.Auth.TokenFile = "/nonexistent"
		_, err := vault.New(tc.cfg)
		if !errors.Is(err, kms.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want ErrConfig with %q", tc.cfg.Addresses, err, tc.want)
		}
	}
}
