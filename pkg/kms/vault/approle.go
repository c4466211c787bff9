package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/internal/keyfile"
	"github.com/atrest/atrest/pkg/secret"
)

// appRoleAuth logs in with role_id and the secret_id from a root-only
// file, unwrapping a response-wrapped secret_id on first use.
type appRoleAuth struct {
	cfg AppRole
}

func (a *appRoleAuth) describe() string { return "approle" }

func (a *appRoleAuth) roleID() (string, error) {
	if a.cfg.RoleID != "" {
		return a.cfg.RoleID, nil
	}
	b, err := os.ReadFile(a.cfg.RoleIDFile)
	if err != nil {
		return "", fmt.Errorf("%w: vault approle role_id_file: %w", kms.ErrConfig, err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", fmt.Errorf("%w: vault approle role_id_file %s is empty", kms.ErrConfig, a.cfg.RoleIDFile)
	}
	return id, nil
}

func (a *appRoleAuth) login(ctx context.Context, cl *Client) (tokenState, error) {
	roleID, err := a.roleID()
	if err != nil {
		return tokenState{}, err
	}
	sid, err := a.secretID(ctx, cl)
	if err != nil {
		return tokenState{}, err
	}
	defer sid.Wipe()
	body := jsonObject(jsonField{"role_id", []byte(roleID)}, jsonField{"secret_id", sid.Bytes()})
	defer clear(body)
	rep, err := cl.do(ctx, call{
		op: "approle login", method: http.MethodPut, anon: true,
		path:       "auth/" + a.cfg.Mount + "/login",
		body:       body,
		badRequest: kms.ErrAuth,
		notFound:   kms.ErrConfig, // no approle method at that mount
	})
	if err != nil {
		var ve *Error
		if errors.As(err, &ve) && ve.Status == http.StatusForbidden {
			ve.Kind = kms.ErrAuth
		}
		return tokenState{}, err
	}
	defer clear(rep.body)
	return parseAuth(rep, "approle login", cl.tok.value)
}

// parseAuth reads the auth block of a login or renew-self response. The
// token becomes a Go string (net/http's headers take no other form) only when it
// differs from current: a renewal, or a login that returns the token in
// use, reuses the one string the Client already holds instead of leaving
// a new copy on the heap each time.
func parseAuth(rep *reply, op, current string) (tokenState, error) {
	var out struct {
		Auth *struct {
			ClientToken   json.RawMessage `json:"client_token"`
			LeaseDuration int64           `json:"lease_duration"`
			Renewable     bool            `json:"renewable"`
		} `json:"auth"`
	}
	err := decode(rep, op, &out)
	if out.Auth != nil {
		defer clear(out.Auth.ClientToken)
	}
	if err != nil {
		return tokenState{}, err
	}
	if out.Auth == nil {
		return tokenState{}, fmt.Errorf("vault %s: response has no token", op)
	}
	tok, ok := plainString(out.Auth.ClientToken)
	if !ok {
		return tokenState{}, fmt.Errorf("vault %s: response has no token", op)
	}
	value := current
	if string(tok) != current {
		value = string(tok)
	}
	return tokenState{
		value: value, ttl: time.Duration(out.Auth.LeaseDuration) * time.Second,
		renewable: out.Auth.Renewable, obtained: time.Now(),
	}, nil
}

// plainString returns the bytes of a non-empty JSON string without
// escapes (tokens, secret_ids), in place: no copy is made.
func plainString(raw json.RawMessage) ([]byte, bool) {
	if len(raw) < 3 || raw[0] != '"' || raw[len(raw)-1] != '"' || bytes.IndexByte(raw, '\\') >= 0 {
		return nil, false
	}
	return raw[1 : len(raw)-1], true
}

// secretID reads the secret_id file; when it holds a response-wrapping
// token, it unwraps it and stores the secret_id in its place.
func (a *appRoleAuth) secretID(ctx context.Context, cl *Client) (*secret.Key, error) {
	k, err := keyfile.Read(a.cfg.SecretIDFile, maxCredential, true)
	if err != nil {
		return nil, fmt.Errorf("%w: vault approle secret_id_file: %w", kms.ErrConfig, err)
	}
	if !a.cfg.SecretIDWrapped || !looksLikeToken(k.Bytes()) {
		return k, nil
	}
	wrapping := strings.TrimSpace(string(k.Bytes()))
	k.Wipe()
	sid, err := a.unwrap(ctx, cl, wrapping)
	if err != nil {
		return nil, err
	}
	line, err := secret.New(sid.Len() + 1)
	if err != nil {
		sid.Wipe()
		return nil, err
	}
	defer line.Wipe()
	copy(line.Bytes(), sid.Bytes())
	line.Bytes()[sid.Len()] = '\n'
	if err := keyfile.WriteAtomic(a.cfg.SecretIDFile, line.Bytes()); err != nil {
		sid.Wipe()
		return nil, fmt.Errorf("vault approle: store the unwrapped secret_id in %s: %w", a.cfg.SecretIDFile, err)
	}
	return sid, nil
}

// looksLikeToken tells a Vault token (hvs., hvb., or the older s. form) from a
// secret_id, which Vault generates as a UUID.
func looksLikeToken(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) > 8 && (bytes.HasPrefix(b, []byte("hvs.")) || bytes.HasPrefix(b, []byte("hvb.")) || bytes.HasPrefix(b, []byte("s.")))
}

// unwrap checks that the wrapping token was made by this AppRole mount's
// secret-id endpoint (so a token substituted by an attacker, wrapping
// something else, is refused before use) and unwraps it.
func (a *appRoleAuth) unwrap(ctx context.Context, cl *Client, wrapping string) (*secret.Key, error) {
	body := jsonObject(jsonField{"token", []byte(wrapping)})
	rep, err := cl.do(ctx, call{
		op: "wrapping lookup", method: http.MethodPut, path: "sys/wrapping/lookup", anon: true, body: body,
		badRequest: kms.ErrAuth,
	})
	clear(body)
	if err != nil {
		return nil, wrapHint(err)
	}
	var look struct {
		Data struct {
			CreationPath string `json:"creation_path"`
		} `json:"data"`
	}
	err = decode(rep, "wrapping lookup", &look)
	clear(rep.body)
	if err != nil {
		return nil, err
	}
	want := "auth/" + a.cfg.Mount + "/role/"
	if p := look.Data.CreationPath; !strings.HasPrefix(p, want) || !strings.HasSuffix(p, "/secret-id") {
		return nil, &Error{Op: "wrapping lookup", Kind: kms.ErrAuth,
			Reason: fmt.Sprintf("the wrapping token was created at %q, not at %s<role>/secret-id; refusing to unwrap it", p, want)}
	}
	rep, err = cl.do(ctx, call{
		op: "wrapping unwrap", method: http.MethodPut, path: "sys/wrapping/unwrap", token: wrapping,
		badRequest: kms.ErrAuth,
	})
	if err != nil {
		return nil, wrapHint(err)
	}
	defer clear(rep.body)
	var out struct {
		Data struct {
			SecretID json.RawMessage `json:"secret_id"`
		} `json:"data"`
	}
	err = decode(rep, "wrapping unwrap", &out)
	defer clear(out.Data.SecretID)
	if err != nil {
		return nil, err
	}
	sid, ok := plainString(out.Data.SecretID)
	if !ok {
		return nil, &Error{Op: "wrapping unwrap", Kind: kms.ErrAuth, Reason: "the wrapped response holds no secret_id"}
	}
	k, err := secret.New(len(sid))
	if err != nil {
		return nil, err
	}
	copy(k.Bytes(), sid)
	return k, nil
}

// wrapHint explains the usual cause of a rejected wrapping token.
func wrapHint(err error) error {
	var ve *Error
	if errors.As(err, &ve) && errors.Is(err, kms.ErrAuth) {
		ve.Reason += " (a wrapping token works once: if atrest did not unwrap it, someone else did; issue a new wrapped secret_id)"
	}
	return err
}
