package vault

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/atrest/atrest/pkg/kms"
)

// KeepAlive keeps the Client's token valid until ctx is done, for
// long-running processes (atrestd). It logs in if needed, renews the token
// when two thirds of its TTL have passed, and logs in afresh when Vault
// will not extend it any further (max TTL reached, not renewable, or
// revoked). Transient failures are retried with backoff; it returns only
// when ctx is done (with ctx's error) or when the credentials themselves
// are rejected (ErrAuth, ErrConfig).
func (cl *Client) KeepAlive(ctx context.Context) error {
	failures := 0
	for {
		next, err := cl.refresh(ctx)
		switch {
		case err == nil:
			failures = 0
		case errors.Is(err, kms.ErrAuth), errors.Is(err, kms.ErrConfig):
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		default: // transient: try again soon, but not in a tight loop
			next = cl.cfg.Backoff.wait(failures)
			failures++
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// refresh does what the token needs now and says when to look again.
func (cl *Client) refresh(ctx context.Context) (time.Duration, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	now := time.Now()
	tok := cl.tok
	switch {
	case !tok.usable(now):
		if err := cl.loginLocked(ctx); err != nil {
			return 0, err
		}
	case tok.ttl <= 0:
		// A token without TTL (root, or a periodic token's parent) needs
		// nothing; look again in a while in case it is revoked and replaced.
		return time.Hour, nil
	case now.Before(tok.obtained.Add(tok.ttl * 2 / 3)):
		return time.Until(tok.obtained.Add(tok.ttl * 2 / 3)), nil
	case tok.renewable:
		renewed, err := cl.renewLocked(ctx)
		if err != nil && !errors.Is(err, kms.ErrAuth) && !errors.Is(err, kms.ErrPermissionDenied) {
			return 0, err
		}
		// Renewal refused, or capped by the token's max TTL: log in again
		// now, while the old token still works for a while.
		if err != nil || renewed.ttl < tok.issued-time.Second {
			if lerr := cl.loginLocked(ctx); lerr != nil {
				if err == nil {
					// The renewed token is still good for a while.
					return time.Until(renewed.obtained.Add(renewed.ttl * 2 / 3)), lerr
				}
				return 0, lerr
			}
			if cl.tok.value == tok.value {
				// Token auth with a file still holding the same token:
				// nothing fresher exists. Look again when it runs out
				// (Vault Agent usually replaces the file before that).
				return max(time.Until(cl.tok.expiresAt()), 100*time.Millisecond), nil
			}
		}
	default:
		if err := cl.loginLocked(ctx); err != nil {
			return 0, err
		}
	}
	t := cl.tok
	if t.ttl <= 0 {
		return time.Hour, nil
	}
	return max(time.Until(t.obtained.Add(t.ttl*2/3)), 100*time.Millisecond), nil
}

// renewLocked renews the current token by its original TTL; cl.mu is held.
func (cl *Client) renewLocked(ctx context.Context) (tokenState, error) {
	inc := int(cl.tok.issued / time.Second)
	body := []byte(`{"increment":"` + strconv.Itoa(inc) + `s"}`)
	rep, err := cl.do(ctx, call{
		op: "token renew-self", method: http.MethodPut, path: "auth/token/renew-self", body: body,
		token: cl.tok.value, badRequest: kms.ErrAuth,
	})
	if err != nil {
		return tokenState{}, err
	}
	defer clear(rep.body)
	t, err := parseAuth(rep, "token renew-self", cl.tok.value)
	if err != nil {
		return tokenState{}, err
	}
	t.gen, t.issued = cl.tok.gen, cl.tok.issued
	cl.tok = t
	cl.setToken(t.value)
	cl.renewals.Add(1)
	return t, nil
}
