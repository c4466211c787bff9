package vault

import (
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
)

// A certificate Vault's CA does not sign is a configuration problem, and
// the message names the field the configuration file really has
// (vault.ca_file, not ca_cert, which the parser rejects).
func TestTLSFailureNamesTheConfigField(t *testing.T) {
	f := classifyTransport(fmt.Errorf("post: %w", x509.UnknownAuthorityError{}))
	if !strings.Contains(f.reason, "vault.ca_file") || strings.Contains(f.reason, "ca_cert") {
		t.Fatalf("reason %q", f.reason)
	}
	_, err := New(Config{Address: "https://vault.example:8200", CACert: "/nonexistent/ca.pem", Auth: Auth{Token: "t"}})
	if err == nil || !strings.Contains(err.Error(), "vault.ca_file") {
		t.Fatalf("missing CA file: %v", err)
	}
}
