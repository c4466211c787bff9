package kms

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Registry holds the KEKs a node has configured, by backend and key name,
// so that a token's Wrapped.Backend and Wrapped.Key find the KEK that
// unwraps it. Its batch methods split a mixed batch into one batch per KEK
// (one round trip each) and put the results back in request order.
//
// A Registry is safe for concurrent use.
type Registry struct {
	mu   sync.RWMutex
	keks map[regKey]KEK
}

type regKey struct{ backend, key string }

// NewRegistry returns a Registry holding keks.
func NewRegistry(keks ...KEK) *Registry {
	r := &Registry{keks: map[regKey]KEK{}}
	for _, k := range keks {
		r.Add(k)
	}
	return r
}

// Add registers k under its Backend() and Key(), replacing any earlier KEK
// with the same names.
func (r *Registry) Add(k KEK) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.keks == nil {
		r.keks = map[regKey]KEK{}
	}
	r.keks[regKey{k.Backend(), k.Key()}] = k
}

// Lookup returns the KEK for a backend and key name, or ErrUnknownBackend.
func (r *Registry) Lookup(backend, key string) (KEK, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if k, ok := r.keks[regKey{backend, key}]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("%w: backend %q key %q", ErrUnknownBackend, backend, key)
}

// For returns the KEK that unwraps w.
func (r *Registry) For(w Wrapped) (KEK, error) { return r.Lookup(w.Backend, w.Key) }

// KEKs returns the registered KEKs ordered by backend and key name.
func (r *Registry) KEKs() []KEK {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]KEK, 0, len(r.keks))
	for _, k := range r.keks {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Backend() != out[j].Backend() {
			return out[i].Backend() < out[j].Backend()
		}
		return out[i].Key() < out[j].Key()
	})
	return out
}

// Unwrap unwraps a batch whose tokens may belong to different KEKs, with
// one batch call per KEK, the KEKs in parallel. Unlike KEK.Unwrap, a KEK
// that fails as a whole (say, Vault unreachable) fails only its own items:
// the result always has one entry per request, and the caller wipes every
// Plaintext.
func (r *Registry) Unwrap(ctx context.Context, reqs []UnwrapRequest) []UnwrapResult {
	out := make([]UnwrapResult, len(reqs))
	fanOut(r, reqs, func(i int, err error) { out[i].Err = err },
		func(k KEK, idx []int, sub []UnwrapRequest) {
			res, err := k.Unwrap(ctx, sub)
			if err == nil && len(res) != len(idx) {
				for _, x := range res {
					x.Plaintext.Wipe()
				}
				err = fmt.Errorf("%s: unwrap returned %d results for %d requests", k.Backend(), len(res), len(idx))
			}
			for j, i := range idx {
				if err != nil {
					out[i].Err = err
				} else {
					out[i] = res[j]
				}
			}
		})
	return out
}

// Rewrap rewraps a batch whose tokens may belong to different KEKs, each
// to its own KEK's newest version, with one batch call per KEK, the KEKs in
// parallel. A KEK that fails as a whole fails only its own items.
func (r *Registry) Rewrap(ctx context.Context, reqs []UnwrapRequest) []WrapResult {
	out := make([]WrapResult, len(reqs))
	fanOut(r, reqs, func(i int, err error) { out[i].Err = err },
		func(k KEK, idx []int, sub []UnwrapRequest) {
			res, err := k.Rewrap(ctx, sub)
			if err == nil && len(res) != len(idx) {
				err = fmt.Errorf("%s: rewrap returned %d results for %d requests", k.Backend(), len(res), len(idx))
			}
			for j, i := range idx {
				if err != nil {
					out[i].Err = err
				} else {
					out[i] = res[j]
				}
			}
		})
	return out
}

// fanOut groups reqs by KEK and runs call once per KEK, concurrently, with
// the request indexes it serves; requests without a KEK go to fail. Each
// call writes only its own indexes, so no locking is needed.
func fanOut(r *Registry, reqs []UnwrapRequest, fail func(int, error), call func(KEK, []int, []UnwrapRequest)) {
	groups := map[KEK][]int{}
	for i, q := range reqs {
		k, err := r.For(q.Wrapped)
		if err != nil {
			fail(i, err)
			continue
		}
		groups[k] = append(groups[k], i)
	}
	var wg sync.WaitGroup
	for k, idx := range groups {
		sub := make([]UnwrapRequest, len(idx))
		for j, i := range idx {
			sub[j] = reqs[i]
		}
		wg.Go(func() { call(k, idx, sub) })
	}
	wg.Wait()
}
