package vault

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/atrest/atrest/pkg/kms"
)

// Check diagnoses the transit key for `atrest kms check`: Vault reachable
// and unsealed, login, the key (exists, derived), the policy's
// capabilities on the paths atrest uses, and a wrap/unwrap round trip of a
// random probe.
func (t *Transit) Check(ctx context.Context) []kms.CheckStep {
	steps := t.cl.checkBase(ctx)
	if failed(steps) {
		return steps
	}
	key := kms.CheckStep{Name: "key"}
	if d, err := t.read(ctx); err != nil {
		key.Err = err
	} else {
		key.Detail = fmt.Sprintf("%s/%s: type %s, derived %v, versions %d..%d", t.mount, t.key, d.Type, d.Derived, d.info(t).MinDecryptionVersion, d.LatestVersion)
		key.Err = t.checkDerived(d)
	}
	steps = append(steps, key)
	steps = append(steps, t.cl.checkCapabilities(ctx, map[string][]string{
		t.path("encrypt"):          {"update"},
		t.path("decrypt"):          {"update"},
		t.path("rewrap"):           {"update"},
		t.mount + "/keys/" + t.key: {"read"},
	}, nil))
	if failed(steps) {
		return steps
	}
	return append(steps, kms.Probe(ctx, t))
}

// Check diagnoses the KV location: Vault reachable, login, and the
// policy's capabilities there (create and read for a secret store; create
// without read for an escrow).
func (kv *KV) Check(ctx context.Context) []kms.CheckStep {
	steps := kv.cl.checkBase(ctx)
	if failed(steps) {
		return steps
	}
	probe := kv.dataPath(kv.rel("atrest-kms-check"))
	want, mustNot := []string{"create", "read"}, []string(nil)
	if kv.cfg.Escrow {
		want, mustNot = []string{"create"}, []string{"read", "list", "update", "delete"}
	}
	return append(steps, kv.cl.checkCapabilities(ctx, map[string][]string{probe: want}, map[string][]string{probe: mustNot}))
}

func failed(steps []kms.CheckStep) bool {
	return slices.ContainsFunc(steps, func(s kms.CheckStep) bool { return s.Err != nil })
}

// checkBase checks that Vault answers and is unsealed, then the login.
func (cl *Client) checkBase(ctx context.Context) []kms.CheckStep {
	reach := kms.CheckStep{Name: "reachable"}
	var up, down []string
	var firstErr error
	for _, n := range cl.nodes {
		detail, err := cl.checkNode(ctx, n)
		if err == nil {
			up = append(up, detail)
			continue
		}
		if firstErr == nil {
			firstErr = err
		}
		down = append(down, n.addr+": "+err.Error())
	}
	switch {
	case len(up) == 0 && len(cl.nodes) == 1:
		reach.Err = firstErr
	case len(up) == 0:
		reach.Err = &Error{Op: "health", Kind: kms.ErrUnavailable, Reason: "no address answered unsealed: " + strings.Join(down, "; "), Attempts: len(cl.nodes)}
	default:
		// A cluster with a node down still works; the detail names it.
		reach.Detail = strings.Join(append(up, down...), "; ")
	}
	steps := []kms.CheckStep{reach}
	if reach.Err != nil {
		return steps
	}
	auth := kms.CheckStep{Name: "auth"}
	if _, err := cl.ensureToken(ctx); err != nil {
		auth.Err = err
	} else if rep, err := cl.do(ctx, call{op: "token lookup-self", method: http.MethodGet, path: "auth/token/lookup-self"}); err != nil {
		auth.Err = err
	} else {
		var out struct {
			Data struct {
				Policies  []string `json:"policies"`
				TTL       int64    `json:"ttl"`
				Renewable bool     `json:"renewable"`
			} `json:"data"`
		}
		_ = decode(rep, "token lookup-self", &out)
		clear(rep.body)
		ttl := "no expiry"
		if out.Data.TTL > 0 {
			ttl = fmt.Sprintf("ttl %ds, renewable %v", out.Data.TTL, out.Data.Renewable)
		}
		auth.Detail = fmt.Sprintf("%s login, policies %s, %s", cl.auth.describe(), strings.Join(out.Data.Policies, ","), ttl)
	}
	return append(steps, auth)
}

// checkCapabilities asks Vault (sys/capabilities-self) what the token may
// do on each path, and reports missing required capabilities and present
// forbidden ones.
func (cl *Client) checkCapabilities(ctx context.Context, need, forbid map[string][]string) kms.CheckStep {
	step := kms.CheckStep{Name: "permissions"}
	paths := make([]string, 0, len(need))
	for p := range need {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	body := []byte(`{"paths":[`)
	for i, p := range paths {
		if i > 0 {
			body = append(body, ',')
		}
		body = appendString(body, p)
	}
	body = append(body, "]}"...)
	rep, err := cl.do(ctx, call{op: "capabilities-self", method: http.MethodPut, path: "sys/capabilities-self", body: body})
	if err != nil {
		step.Err = err
		return step
	}
	var out map[string]any
	if err := decode(rep, "capabilities-self", &out); err != nil {
		step.Err = err
		return step
	}
	var missing, extra, ok []string
	for _, p := range paths {
		have := capsOf(out[p])
		for _, c := range need[p] {
			if !slices.Contains(have, c) && !slices.Contains(have, "root") {
				missing = append(missing, p+": "+c)
			}
		}
		for _, c := range forbid[p] {
			if slices.Contains(have, c) || slices.Contains(have, "root") {
				extra = append(extra, p+": "+c)
			}
		}
		ok = append(ok, p+" ["+strings.Join(have, ",")+"]")
	}
	step.Detail = strings.Join(ok, "; ")
	switch {
	case len(missing) > 0:
		step.Err = fmt.Errorf("%w: the policy lacks %s (see docs/vault.md)", kms.ErrPermissionDenied, strings.Join(missing, ", "))
	case len(extra) > 0:
		step.Err = fmt.Errorf("%w: the policy allows %s, which a node must not have on its escrow (see docs/vault.md)", kms.ErrConfig, strings.Join(extra, ", "))
	}
	return step
}

func capsOf(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, c := range list {
		if s, ok := c.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// checkNode asks one node whether it answers and is unsealed.
func (cl *Client) checkNode(ctx context.Context, n *node) (string, error) {
	rep, f, ok := cl.attempt(ctx, call{op: "health", method: http.MethodGet, path: "sys/health", anon: true,
		params: map[string][]string{"standbyok": {"true"}, "perfstandbyok": {"true"}}}, n)
	var h struct {
		Version     string `json:"version"`
		Sealed      bool   `json:"sealed"`
		Initialized bool   `json:"initialized"`
		Standby     bool   `json:"standby"`
	}
	if rep != nil {
		_ = decode(rep, "health", &h)
	}
	switch {
	case rep == nil:
		return "", &Error{Op: "health", Kind: f.kind, Reason: f.reason, Attempts: 1}
	case h.Sealed || rep.status == http.StatusServiceUnavailable:
		return "", &Error{Op: "health", Kind: kms.ErrUnavailable, Reason: "vault is sealed", Status: rep.status, Attempts: 1}
	case !ok && rep.status != http.StatusTooManyRequests:
		return "", &Error{Op: "health", Kind: f.kind, Reason: f.reason, Status: rep.status, Messages: f.messages, Attempts: 1}
	}
	role := "active"
	if h.Standby {
		role = "standby"
	}
	return fmt.Sprintf("%s: vault %s, unsealed, %s", n.addr, h.Version, role), nil
}
