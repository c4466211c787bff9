package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/internal/keyfile"
)

// authenticator obtains a token.
type authenticator interface {
	// login returns a new token and what Vault says about it.
	login(ctx context.Context, cl *Client) (tokenState, error)
	// describe names the method for messages, e.g. "approle".
	describe() string
}

// maxCredential bounds token and secret_id files.
const maxCredential = 4096

// ensureToken logs in if there is no usable token, and returns the token
// generation in use.
func (cl *Client) ensureToken(ctx context.Context) (uint64, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.tok.usable(time.Now()) {
		return cl.tok.gen, nil
	}
	if err := ctx.Err(); err != nil {
		// Waiting for another caller's login (which failed) outlasted
		// this caller's context: no login of its own.
		op := cl.auth.describe() + " login"
		if errors.Is(err, context.Canceled) {
			return cl.tok.gen, fmt.Errorf("vault %s: %w", op, err)
		}
		return cl.tok.gen, &Error{Op: op, Kind: kms.ErrUnavailable, Reason: "the deadline passed while another login was under way"}
	}
	return cl.tok.gen, cl.loginLocked(ctx)
}

// loginLocked logs in and installs the new token; cl.mu is held.
func (cl *Client) loginLocked(ctx context.Context) error {
	t, err := cl.auth.login(ctx, cl)
	if err != nil {
		return err
	}
	t.gen = cl.tok.gen + 1
	t.issued = t.ttl
	cl.tok = t
	cl.setToken(t.value)
	cl.logins.Add(1)
	return nil
}

// relogin replaces a token that Vault rejected, unless another goroutine
// already replaced generation gen. A token that cannot be replaced (from
// VAULT_TOKEN, or a token file still holding the rejected token) is an
// ErrAuth failure.
func (cl *Client) relogin(ctx context.Context, gen uint64) error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.tok.gen != gen {
		return nil
	}
	rejected := cl.tok.value
	if err := cl.loginLocked(ctx); err != nil {
		return err
	}
	if cl.tok.value == rejected {
		cl.tok.value = ""
		cl.setToken("")
		return &Error{Op: cl.auth.describe() + " login", Kind: kms.ErrAuth,
			Reason: "vault no longer accepts the token (expired or revoked) and there is no new one"}
	}
	return nil
}

// tokenAccepted asks Vault whether the current token is still valid, to
// tell a revoked or expired token (log in again) from a policy that denies
// the operation (report ErrPermissionDenied). Only a 401 or 403 answer
// counts as rejection.
func (cl *Client) tokenAccepted(ctx context.Context) bool {
	_, f, ok := cl.attempt(ctx, call{op: "token lookup-self", method: http.MethodGet, path: "auth/token/lookup-self"}, cl.nodes[cl.pref.Load()])
	return ok || (f.status != http.StatusForbidden && f.status != http.StatusUnauthorized)
}

// lookupSelf describes a token; a rejection is ErrAuth.
func lookupSelf(ctx context.Context, cl *Client, token, source string) (tokenState, error) {
	rep, err := cl.do(ctx, call{
		op: "token lookup-self", method: http.MethodGet, path: "auth/token/lookup-self", token: token,
	})
	if err != nil {
		var ve *Error
		if errors.As(err, &ve) && (ve.Status == http.StatusForbidden || ve.Status == http.StatusUnauthorized) {
			ve.Kind = kms.ErrAuth
			ve.Reason = "vault rejected the token from " + source + " (invalid, expired or revoked)"
		}
		return tokenState{}, err
	}
	defer clear(rep.body)
	var out struct {
		Data struct {
			TTL       int64 `json:"ttl"`
			Renewable bool  `json:"renewable"`
		} `json:"data"`
	}
	if err := decode(rep, "token lookup-self", &out); err != nil {
		return tokenState{}, err
	}
	return tokenState{
		value: token, ttl: time.Duration(out.Data.TTL) * time.Second,
		renewable: out.Data.Renewable, obtained: time.Now(),
	}, nil
}

// tokenAuth uses a given token: from a root-only file, read again at each
// login, or from VAULT_TOKEN.
type tokenAuth struct {
	file string
	env  string
}

func (a *tokenAuth) describe() string { return "token" }

func (a *tokenAuth) login(ctx context.Context, cl *Client) (tokenState, error) {
	token, source := a.env, "VAULT_TOKEN"
	if a.file != "" {
		k, err := keyfile.Read(a.file, maxCredential, true)
		if err != nil {
			return tokenState{}, fmt.Errorf("%w: vault token_file: %w", kms.ErrConfig, err)
		}
		// One Go string per distinct token for the Client's lifetime:
		// rereading the file that still holds the token in use reuses it.
		b := bytes.TrimSpace(k.Bytes())
		token, source = cl.tok.value, a.file
		if string(b) != token {
			token = string(b)
		}
		k.Wipe()
	}
	return lookupSelf(ctx, cl, token, source)
}
