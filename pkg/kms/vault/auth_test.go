package vault_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/vault"
	"github.com/hashicorp/vault/api"
)

func TestAppRolePolicyAllowsExactlyWhatAtrestNeeds(t *testing.T) {
	s := vaulttest.Shared(t)
	tr, n := nodeTransit(t, s)
	other := provision(t, s, nil)
	// What atrest does on the node works (wrap, unwrap, rewrap, describe,
	// escrow deposit, KV put/get) ...
	w, err := kms.Wrap(ctx(t), tr, volA, random(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kms.Rewrap(ctx(t), tr, volA, w); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Describe(ctx(t)); err != nil {
		t.Fatal(err)
	}
	for _, step := range tr.Check(ctx(t)) {
		if step.Err != nil {
			t.Errorf("kms check %s: %v", step.Name, step.Err)
		}
	}
	// ... and nothing else: another node's key, rotation, reading the escrow.
	otherKey := newTransit(t, tr.Client(), other.Key)
	if _, err := kms.Wrap(ctx(t), otherKey, volA, random(t, 32)); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Errorf("wrap with another node's key = %v, want ErrPermissionDenied", err)
	}
	if _, err := tr.Rotate(ctx(t)); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Errorf("rotate = %v, want ErrPermissionDenied", err)
	}
	escrow, err := vault.NewKV(tr.Client(), vault.KVConfig{Prefix: "atrest-escrow", Host: n.Name, Escrow: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := escrow.Deposit(ctx(t), volA, "recovery-1", random(t, 32)); err != nil {
		t.Fatalf("escrow deposit: %v", err)
	}
	if _, err := escrow.Get(ctx(t), volA); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Errorf("node reading the escrow = %v, want ErrPermissionDenied", err)
	}
	if st := tr.Client().Stats(); st.Logins != 1 {
		t.Errorf("%d logins for one session, want 1 (a 403 must not trigger login loops)", st.Logins)
	}
}

func TestWrongCredentials(t *testing.T) {
	s := vaulttest.Shared(t)
	n := provision(t, s, nil)

	badSecret := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(badSecret, []byte("00000000-1111-2222-3333-444444444444\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badRole := appRoleConfig(s, n)
	badRole.Auth.AppRole.RoleID = "00000000-1111-2222-3333-444444444444"
	badSID := appRoleConfig(s, n)
	badSID.Auth.AppRole.SecretIDFile = badSecret
	badToken := vault.Config{Address: s.Address, CACert: s.CAFile, Auth: vault.Auth{TokenFile: tokenFile(t, "hvs.notavalidtoken0000000000")}}
	for name, cfg := range map[string]vault.Config{"role_id": badRole, "secret_id": badSID, "token": badToken} {
		tr := newTransit(t, newClient(t, cfg), n.Key)
		start := time.Now()
		_, err := kms.Wrap(ctx(t), tr, volA, random(t, 32))
		if !errors.Is(err, kms.ErrAuth) {
			t.Errorf("wrong %s: %v, want ErrAuth", name, err)
			continue
		}
		var ve *vault.Error
		if !errors.As(err, &ve) || ve.Attempts != 1 {
			t.Errorf("wrong %s: %#v, want one attempt (no retry on rejected credentials)", name, err)
		}
		if strings.Contains(err.Error(), "notavalidtoken") || strings.Contains(err.Error(), "44444444") {
			t.Errorf("wrong %s: the error shows the credential: %v", name, err)
		}
		if time.Since(start) > 10*time.Second {
			t.Errorf("wrong %s took %s: rejected credentials must not be retried", name, time.Since(start))
		}
	}

	// A secret_id file others can read is refused before it is used.
	loose := appRoleConfig(s, n)
	if err := os.Chmod(n.SecretIDFile, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := kms.Wrap(ctx(t), newTransit(t, newClient(t, loose), n.Key), volA, random(t, 32))
	if !errors.Is(err, kms.ErrConfig) || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("secret_id file mode 0644: %v, want ErrConfig naming the fix", err)
	}
}

func TestWrappedSecretID(t *testing.T) {
	s := vaulttest.Shared(t)
	n := provision(t, s, nil)
	root := s.Client(t)
	root.SetWrappingLookupFunc(func(string, string) string { return "10m" })
	sec, err := root.Logical().Write("auth/approle/role/"+n.Key+"/secret-id", nil)
	if err != nil || sec.WrapInfo == nil {
		t.Fatalf("wrapped secret-id: %v", err)
	}
	wrapping := sec.WrapInfo.Token
	if err := os.WriteFile(n.SecretIDFile, []byte(wrapping+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := appRoleConfig(s, n)
	cfg.Auth.AppRole.SecretIDWrapped = true
	tr := newTransit(t, newClient(t, cfg), n.Key)
	if _, err := kms.Wrap(ctx(t), tr, volA, random(t, 32)); err != nil {
		t.Fatalf("first use of a wrapped secret_id: %v", err)
	}
	b, err := os.ReadFile(n.SecretIDFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got == wrapping || len(got) != 36 {
		t.Fatalf("secret_id file after unwrapping holds %d bytes, want the 36-byte secret_id", len(got))
	}
	if fi, _ := os.Stat(n.SecretIDFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("rewritten secret_id file mode %04o", fi.Mode().Perm())
	}
	// A restart logs in with the stored secret_id.
	if _, err := kms.Wrap(ctx(t), newTransit(t, newClient(t, cfg), n.Key), volA, random(t, 32)); err != nil {
		t.Fatalf("second process with the unwrapped secret_id: %v", err)
	}
	// A wrapping token someone else already unwrapped is an auth failure
	// that says so.
	if err := os.WriteFile(n.SecretIDFile, []byte(wrapping+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = kms.Wrap(ctx(t), newTransit(t, newClient(t, cfg), n.Key), volA, random(t, 32))
	if !errors.Is(err, kms.ErrAuth) || !strings.Contains(err.Error(), "someone else") {
		t.Errorf("reused wrapping token: %v, want ErrAuth explaining it", err)
	}
	// A wrapping token that wraps something else is refused unopened.
	foreign, err := root.Logical().Write("sys/wrapping/wrap", map[string]any{"secret_id": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.SecretIDFile, []byte(foreign.WrapInfo.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = kms.Wrap(ctx(t), newTransit(t, newClient(t, cfg), n.Key), volA, random(t, 32))
	if !errors.Is(err, kms.ErrAuth) || !strings.Contains(err.Error(), "refusing to unwrap") {
		t.Errorf("foreign wrapping token: %v, want ErrAuth refusing it", err)
	}
	if _, err := root.Logical().Unwrap(foreign.WrapInfo.Token); err != nil {
		t.Errorf("the refused wrapping token was consumed: %v", err)
	}
}

func TestTokenRenewalAndRelogin(t *testing.T) {
	t.Parallel()
	s := vaulttest.Shared(t)
	// Tokens live 3 s and cannot be renewed past 6 s: without renewal and
	// fresh logins, the calls below, 9 s apart in total, would fail.
	n := provision(t, s, map[string]any{"token_ttl": "3s", "token_max_ttl": "6s"})
	tr := newTransit(t, newClient(t, appRoleConfig(s, n)), n.Key)
	w, err := kms.Wrap(ctx(t), tr, volA, random(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	keepCtx, stop := ctxCancel(t)
	done := make(chan error, 1)
	go func() { done <- tr.KeepAlive(keepCtx) }()
	for i := range 9 {
		time.Sleep(time.Second)
		got, err := kms.Unwrap(ctx(t), tr, volA, w)
		if err != nil {
			t.Fatalf("unwrap %d s into the session: %v", i+1, err)
		}
		got.Wipe()
	}
	stop()
	if err := <-done; !errors.Is(err, keepCtx.Err()) {
		t.Errorf("KeepAlive returned %v after cancel", err)
	}
	st := tr.Client().Stats()
	if st.Renewals < 1 || st.Logins < 2 {
		t.Errorf("stats %+v: want at least one renewal and one fresh login after the max TTL", st)
	}
}

func TestExpiredTokenLogsInAgainWithoutKeepAlive(t *testing.T) {
	t.Parallel()
	s := vaulttest.Shared(t)
	n := provision(t, s, map[string]any{"token_ttl": "2s", "token_max_ttl": "2s"})
	tr := newTransit(t, newClient(t, appRoleConfig(s, n)), n.Key)
	w, err := kms.Wrap(ctx(t), tr, volA, random(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	got, err := kms.Unwrap(ctx(t), tr, volA, w)
	if err != nil {
		t.Fatalf("unwrap after the token expired: %v", err)
	}
	got.Wipe()
	if st := tr.Client().Stats(); st.Logins != 2 {
		t.Errorf("stats %+v, want exactly 2 logins", st)
	}
}

func TestRevokedTokenFromFileIsReread(t *testing.T) {
	s := vaulttest.Shared(t)
	n := provision(t, s, nil)
	first := s.Token(t, &api.TokenCreateRequest{Policies: []string{n.Policy}, TTL: "1h"})
	file := tokenFile(t, first)
	tr := newTransit(t, newClient(t, vault.Config{Address: s.Address, CACert: s.CAFile, Auth: vault.Auth{TokenFile: file}}), n.Key)
	w, err := kms.Wrap(ctx(t), tr, volA, random(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Client(t).Auth().Token().RevokeTree(first); err != nil {
		t.Fatal(err)
	}
	// Revoked and not replaced: an auth failure, not "permission denied".
	if _, err := kms.Unwrap(ctx(t), tr, volA, w); !errors.Is(err, kms.ErrAuth) {
		t.Fatalf("unwrap with a revoked token = %v, want ErrAuth", err)
	}
	// Vault Agent (or an operator) writes a new token: picked up.
	second := s.Token(t, &api.TokenCreateRequest{Policies: []string{n.Policy}, TTL: "1h"})
	if err := os.WriteFile(file, []byte(second+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := kms.Unwrap(ctx(t), tr, volA, w)
	if err != nil {
		t.Fatalf("unwrap after the token file was replaced: %v", err)
	}
	got.Wipe()
}
