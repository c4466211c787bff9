package vault_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/vault"
)

// ownServer provisions a node on a server of its own (these tests seal
// or stop it) with a short deadline.
func ownServer(t *testing.T, deadline time.Duration) (*vaulttest.Server, func(time.Duration) *vault.Transit, kms.Wrapped) {
	t.Helper()
	s := vaulttest.Start(t)
	n := provision(t, s, nil)
	withDeadline := func(d time.Duration) *vault.Transit {
		cfg := appRoleConfig(s, n)
		cfg.Deadline = d
		cfg.Timeout = time.Second
		cfg.Backoff = vault.Backoff{Initial: 50 * time.Millisecond, Max: 400 * time.Millisecond}
		return newTransit(t, newClient(t, cfg), n.Key)
	}
	w, err := kms.Wrap(ctx(t), withDeadline(deadline), volA, random(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s, withDeadline, w
}

// wantUnavailable checks err is ErrUnavailable for reason, after retries,
// and that the call gave up near its deadline instead of hanging.
func wantUnavailable(t *testing.T, err error, reason string, took, deadline time.Duration) {
	t.Helper()
	t.Logf("after %s: %v", took.Round(time.Millisecond), err)
	if !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	var ve *vault.Error
	if !errors.As(err, &ve) || !strings.Contains(ve.Reason, reason) || ve.Attempts < 2 {
		t.Errorf("got %v, want reason %q after several attempts", err, reason)
	}
	// Generous bound: this checks "gives up at the deadline", not speed.
	if took > deadline+5*time.Second {
		t.Errorf("gave up after %s with a %s deadline", took, deadline)
	}
}

func TestSealedVaultIsUnavailableWithinDeadline(t *testing.T) {
	t.Parallel()
	const deadline = 2 * time.Second
	s, transit, w := ownServer(t, deadline)
	tr, patient := transit(deadline), transit(time.Minute)
	// Log both in while Vault is unsealed.
	for _, k := range []*vault.Transit{tr, patient} {
		if _, err := k.Describe(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	s.Seal(t)
	start := time.Now()
	_, err := kms.Unwrap(ctx(t), tr, volA, w)
	wantUnavailable(t, err, "sealed", time.Since(start), deadline)
	if !strings.Contains(err.Error(), "vault is sealed") {
		t.Errorf("message %q does not say the vault is sealed", err)
	}

	// Unsealed while a call is retrying: the call succeeds.
	done := make(chan error, 1)
	go func() {
		got, err := kms.Unwrap(ctx(t), patient, volA, w)
		got.Wipe()
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	s.Unseal(t)
	if err := <-done; err != nil {
		t.Errorf("unwrap retried across the unseal: %v", err)
	}
}

func TestStoppedVaultIsUnavailableWithinDeadline(t *testing.T) {
	t.Parallel()
	const deadline = 2 * time.Second
	s, transit, w := ownServer(t, deadline)
	tr := transit(deadline)
	if _, err := tr.Describe(ctx(t)); err != nil {
		t.Fatal(err)
	}
	s.Stop(t)
	start := time.Now()
	_, err := kms.Unwrap(ctx(t), tr, volA, w)
	wantUnavailable(t, err, "connection refused", time.Since(start), deadline)
	if strings.Contains(err.Error(), w.Ciphertext) {
		t.Errorf("error carries the ciphertext: %v", err)
	}
}

func TestHungVaultTimesOutPerCall(t *testing.T) {
	t.Parallel()
	const deadline = 3 * time.Second
	s, transit, w := ownServer(t, deadline)
	tr := transit(deadline)
	if _, err := tr.Describe(ctx(t)); err != nil {
		t.Fatal(err)
	}
	// A frozen process: the kernel still accepts connections, nothing answers.
	s.Freeze(t)
	start := time.Now()
	_, err := kms.Unwrap(ctx(t), tr, volA, w)
	s.Thaw(t)
	wantUnavailable(t, err, "timeout: no response within", time.Since(start), deadline)
	got, err := kms.Unwrap(ctx(t), tr, volA, w)
	if err != nil {
		t.Fatalf("after the server resumed: %v", err)
	}
	got.Wipe()
}

func TestRateLimitedCallsAreRetried(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	n := provision(t, s, nil)
	tr := newTransit(t, newClient(t, appRoleConfig(s, n)), n.Key)
	w, err := kms.Wrap(ctx(t), tr, volA, random(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	// Two requests a second on the node's decrypt path.
	if _, err := s.Client(t).Logical().Write("sys/quotas/rate-limit/atrest-test", map[string]any{
		"path": "transit/decrypt/" + n.Key, "rate": 2, "interval": "1s",
	}); err != nil {
		t.Fatal(err)
	}
	for range 8 {
		got, err := kms.Unwrap(ctx(t), tr, volA, w)
		if err != nil {
			t.Fatalf("rate-limited unwrap was not retried to success: %v", err)
		}
		got.Wipe()
	}
	if st := tr.Client().Stats(); st.Retries == 0 {
		t.Errorf("stats %+v: 8 calls at 2 a second were never rate limited; the quota did not apply", st)
	}
}
