package vault

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/atrest/atrest/pkg/kms"
)

func TestWithEnvOverlaysConfig(t *testing.T) {
	file := Config{Address: "https://file:8200", Namespace: "team", Auth: Auth{Method: "approle", AppRole: AppRole{RoleID: "r", SecretIDFile: "/s"}}}
	env := map[string]string{"VAULT_ADDR": "https://env:8200", "VAULT_CACERT": "/ca.pem", "VAULT_CLIENT_TIMEOUT": "7", "VAULT_TOKEN": "t"}
	got, err := file.WithEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got.Address != "https://env:8200" || got.CACert != "/ca.pem" || got.Namespace != "team" || got.Timeout != 7*time.Second || got.Auth.Token != "t" {
		t.Errorf("overlay = %+v", got)
	}
	if got.Auth.Method != "approle" {
		t.Errorf("VAULT_TOKEN changed an explicit approle config to %q", got.Auth.Method)
	}
	env["VAULT_CLIENT_TIMEOUT"] = "soon"
	if _, err := file.WithEnv(func(k string) string { return env[k] }); !errors.Is(err, kms.ErrConfig) {
		t.Errorf("bad VAULT_CLIENT_TIMEOUT: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	for name, c := range map[string]Config{
		"no address":      {Auth: Auth{Token: "t"}},
		"not a url":       {Address: "vault:8200", Auth: Auth{Token: "t"}},
		"no token":        {Address: "https://v"},
		"approle no role": {Address: "https://v", Auth: Auth{Method: "approle", AppRole: AppRole{SecretIDFile: "/s"}}},
		"approle no sid":  {Address: "https://v", Auth: Auth{Method: "approle", AppRole: AppRole{RoleID: "r"}}},
		"unknown method":  {Address: "https://v", Auth: Auth{Method: "ldap"}},
	} {
		if _, err := New(c); !errors.Is(err, kms.ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	c, err := Config{Address: "https://v", Auth: Auth{Token: "t"}}.withDefaults()
	if err != nil || c.Timeout != DefaultTimeout || c.Deadline != DefaultDeadline || c.Auth.Method != "token" {
		t.Errorf("defaults: %+v, %v", c, err)
	}
	ca := t.TempDir() + "/ca.pem"
	if err := os.WriteFile(ca, []byte("not pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Address: "https://v", CACert: ca, Auth: Auth{Token: "t"}}); !errors.Is(err, kms.ErrConfig) {
		t.Errorf("CA file without PEM: %v", err)
	}
}

func TestClassify(t *testing.T) {
	refused := &url.Error{Op: "Put", URL: "https://v/v1/x", Err: &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	for _, tc := range []struct {
		f         failure
		kind      error
		reason    string
		transient bool
	}{
		{classifyTransport(refused), kms.ErrUnavailable, "connection refused", true},
		{classifyTransport(fmt.Errorf("x: %w", syscall.ECONNRESET)), kms.ErrUnavailable, "connection reset", true},
		{classifyTransport(&net.DNSError{Name: "vault.example", IsNotFound: true}), kms.ErrUnavailable, "cannot resolve host vault.example", true},
		{classifyStatus(503, []string{"Vault is sealed"}), kms.ErrUnavailable, "vault is sealed", true},
		{classifyStatus(429, nil), kms.ErrUnavailable, "rate limited (HTTP 429)", true},
		{classifyStatus(500, []string{"internal error"}), kms.ErrUnavailable, "server error (HTTP 500)", true},
		{classifyStatus(502, nil), kms.ErrUnavailable, "server error (HTTP 502)", true},
		{classifyStatus(403, []string{"permission denied"}), kms.ErrPermissionDenied, "HTTP 403", false},
		{classifyStatus(404, nil), kms.ErrKeyNotFound, "HTTP 404", false},
		{classifyStatus(400, []string{"bad"}), kms.ErrInvalidRequest, "HTTP 400", false},
	} {
		if !errors.Is(tc.f.kind, tc.kind) || !strings.Contains(tc.f.reason, tc.reason) || tc.f.transient != tc.transient {
			t.Errorf("%+v, want %v %q transient=%v", tc.f, tc.kind, tc.reason, tc.transient)
		}
	}
	if f := classifyTransport(refused); strings.Contains(f.reason, "https://v") {
		t.Errorf("reason repeats the URL: %q", f.reason)
	}
}

func TestErrorMessage(t *testing.T) {
	e := &Error{Op: "transit decrypt", Kind: kms.ErrUnavailable, Reason: "vault is sealed (HTTP 503)", Status: 503, Attempts: 4, Elapsed: 2100 * time.Millisecond}
	want := "vault transit decrypt: kms unavailable: vault is sealed (HTTP 503) (4 attempts in 2.1s)"
	if e.Error() != want {
		t.Errorf("Error() = %q, want %q", e.Error(), want)
	}
	if !errors.Is(e, kms.ErrUnavailable) {
		t.Error("Error does not unwrap to its kind")
	}
	if got := oneLine("1 error occurred:\n\t* permission denied\n\n"); got != "permission denied" {
		t.Errorf("oneLine = %q", got)
	}
}

func TestBackoffIsJitteredAndCapped(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	seen := map[time.Duration]bool{}
	for n := range 20 {
		w := b.wait(n)
		ceiling := min(b.Initial<<n, b.Max)
		if n > 10 {
			ceiling = b.Max
		}
		if w < ceiling/2 || w > ceiling {
			t.Errorf("wait(%d) = %s, want within [%s, %s]", n, w, ceiling/2, ceiling)
		}
		seen[w] = true
	}
	if len(seen) < 10 {
		t.Errorf("only %d distinct waits in 20: not jittered", len(seen))
	}
}

func TestJSONBodies(t *testing.T) {
	got := string(jsonObject(jsonField{"role_id", []byte(`a"b\c` + "\n")}, jsonField{"secret_id", []byte("x")}))
	if want := `{"role_id":"a\"b\\c\u000a","secret_id":"x"}`; got != want {
		t.Errorf("jsonObject = %s, want %s", got, want)
	}
	if got := string(newJSONBuf(0).base64([]byte{0xff, 0x00}).bytes()); got != `"/wA="` {
		t.Errorf("base64 = %s", got)
	}
}

// A body that outgrows its array leaves no copy of a secret behind in the
// array it left.
func TestJSONBufClearsWhatItOutgrows(t *testing.T) {
	w := newJSONBuf(8)
	w.raw(`{"x":`)
	w.str([]byte("s3cret"))
	old := w.b[:cap(w.b)]
	w.raw(`,"plaintext":`).base64([]byte("more secret bytes")).raw("}")
	if &old[0] == &w.b[0] {
		t.Fatal("the buffer did not have to grow; the test proves nothing")
	}
	for _, c := range old {
		if c != 0 {
			t.Fatalf("the outgrown array still holds %q", old)
		}
	}
	if got := string(w.bytes()); got != `{"x":"s3cret","plaintext":"bW9yZSBzZWNyZXQgYnl0ZXM="}` {
		t.Fatalf("body = %s", got)
	}
}
