package volume

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// tpmBindings counts v's TPM keyslots that unseal and open the volume
// and match today's PCRs (what the next boot with the KMS down can use),
// and its systemd-tpm2 tokens whose keyslot is in the header (bindings:
// the old one, sealed to yesterday's PCRs, counts).
func tpmBindings(t *testing.T, m *Manager, img string) (opening, matching, tokens int) {
	t.Helper()
	v := find(t, m, img)
	opening, _ = tpmKeyslotsOpening(t, m, v)
	for _, s := range m.tpmStatus(v.Header) {
		if s.PCRsMatch != nil && *s.PCRsMatch {
			matching++
		}
		if _, ok := v.Header.Keyslots[s.Keyslot]; ok {
			tokens++
		}
	}
	return opening, matching, tokens
}

// A re-seal whose context is cancelled (atrestd stopped, its deadline
// hit) at each of its steps after the new keyslot went in: the step is
// finished, not cut short: the call succeeds and the volume has exactly
// one TPM keyslot, matching today's PCRs and opening it, as the next boot
// with the KMS down needs; never two, never none.
func TestResealAfterOpenCancelled(t *testing.T) {
	s := vaulttest.Shared(t)
	for _, point := range []string{"tpm-reseal-after-add", "tpm-reseal-after-verify", "tpm-reseal-after-remove"} {
		t.Run(point, func(t *testing.T) {
			m, r := tpmVault(t, s, "")
			img := enrolled(t, m, "cancel", nil)
			r.sw.ExtendPCR7(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			hit := false
			prev := failpoint
			failpoint = func(name string) {
				if name == point {
					hit = true
					cancel()
				}
			}
			t.Cleanup(func() { failpoint = prev })
			res, err := m.ResealAfterOpen(ctx, find(t, m, img), []string{"vault-transit"})
			failpoint = prev
			if !hit {
				t.Fatal("the failpoint was not reached")
			}
			if err != nil || res == nil || len(res.Added) != 1 || len(res.Removed) != 1 {
				t.Fatalf("cancelled at %s: %+v, %v; want the re-seal finished", point, res, err)
			}
			if o, matching, tokens := tpmBindings(t, m, img); o != 1 || matching != 1 || tokens != 1 {
				t.Fatalf("cancelled at %s: %d opening, %d matching, %d tokens; want one TPM keyslot matching today's PCRs", point, o, matching, tokens)
			}
			if err := platformOpens(t, m, find(t, m, img)); err != nil {
				t.Fatalf("cancelled at %s: %v", point, err)
			}
		})
	}
}

// countdown is a context cancelled at its n-th look (Done or Err): a
// cancellation (atrestd stopped, its deadline hit) at each point where
// the re-seal consults its context, one point per run.
type countdown struct {
	context.Context
	left atomic.Int64
	once sync.Once
	done chan struct{}
}

func newCountdown(parent context.Context, n int64) *countdown {
	c := &countdown{Context: parent, done: make(chan struct{})}
	c.left.Store(n)
	return c
}

func (c *countdown) look() bool {
	if c.left.Add(-1) < 0 {
		c.once.Do(func() { close(c.done) })
		return true
	}
	return false
}

func (c *countdown) Done() <-chan struct{} {
	c.look()
	return c.done
}

func (c *countdown) Err() error {
	if c.look() {
		return context.Canceled
	}
	return nil
}

// fired reports whether the cancellation happened.
func (c *countdown) fired() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// A re-seal cancelled at every point where it looks at its context, in
// turn: a TPM keyslot that opens the volume is left each time, and the
// rerun ends with exactly one, matching today's PCRs.
func TestResealAfterOpenCancelledAnywhere(t *testing.T) {
	s := vaulttest.Shared(t)
	for n := int64(0); ; n++ {
		m, r := tpmVault(t, s, "")
		img := enrolled(t, m, "cancel", nil)
		r.sw.ExtendPCR7(t)
		ctx := newCountdown(t.Context(), n)
		_, err := m.ResealAfterOpen(ctx, find(t, m, img), []string{"vault-transit"})
		if !ctx.fired() {
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d cancellation points", n)
			return
		}
		// Either nothing changed (the old keyslot, sealed to yesterday's
		// PCRs) or the re-seal was finished: one keyslot, never two or
		// none.
		if o, matching, tokens := tpmBindings(t, m, img); tokens != 1 || matching != o {
			t.Fatalf("cancelled at look %d (%v): %d opening, %d matching, %d tokens; want the old keyslot alone or the new one alone", n, err, o, matching, tokens)
		}
		if _, err := m.ResealAfterOpen(t.Context(), find(t, m, img), []string{"vault-transit"}); err != nil {
			t.Fatal(err)
		}
		if o, matching, tokens := tpmBindings(t, m, img); o != 1 || matching != 1 || tokens != 1 {
			t.Fatalf("cancelled at look %d (%v), after the rerun: %d opening, %d matching, %d tokens; want one TPM keyslot matching today's PCRs", n, err, o, matching, tokens)
		}
		if n > 200 {
			t.Fatal("the re-seal looks at its context more than 200 times")
		}
	}
}

// Two re-seals of one volume at once (atrestd's and atrest open's):
// they take turns under the volume lock, and the volume ends with one
// TPM keyslot matching today's PCRs, never none.
func TestResealAfterOpenConcurrent(t *testing.T) {
	m, r := tpmVault(t, vaulttest.Shared(t), "")
	img := enrolled(t, m, "race", nil)
	r.sw.ExtendPCR7(t)
	// Two managers, as two processes have: only the volume lock on the
	// run directory is shared.
	ms := []*Manager{m, r.boot()}
	var wg sync.WaitGroup
	errs := make([]error, len(ms))
	for i := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = ms[i].ResealAfterOpen(t.Context(), find(t, ms[i], img), []string{"vault-transit"})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n, matching, tokens := tpmBindings(t, m, img); n != 1 || matching != 1 || tokens != 1 {
		t.Fatalf("after two concurrent re-seals: %d opening, %d matching, %d tokens; want one TPM keyslot matching today's PCRs", n, matching, tokens)
	}
}
