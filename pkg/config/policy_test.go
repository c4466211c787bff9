package config

import (
	"errors"
	"strings"
	"testing"
)

const policyBase = "vault:\n  address: https://vault.example:8200\nkmip:\n  address: km.example\n  ca_file: /etc/atrest/ca.pem\n  cert_file: /etc/atrest/n.crt\n  key_file: /etc/atrest/n.key\n"

// Every policy shape the docs show parses, compiles to the keyslots
// docs/policy.md describes, and a volume's own policy overrides the fleet's.
func TestPolicyShapes(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"policy:\n  any: [vault, local]\n", "any(vault,local)"},
		{"policy:\n  all: [vault, local]\n", "all(vault,local)"},
		{"policy:\n  threshold: {k: 2, of: [vault, kmip, local]}\n", "threshold(2;vault,kmip,local)"},
		{"policy:\n  any: [{all: [local, vault]}, kmip]\n", "any(all(local,vault),kmip)"},
		{"policy:\n  any: [all: [local, vault], kmip]\n", "any(all(local,vault),kmip)"},
		{"policy: local\n", "local"},
		// tpm: tpm.device defaults to auto; a missing TPM fails at unlock.
		{"policy:\n  any: [tpm, vault]\n", "any(tpm,vault)"},
		{"policy:\n  threshold: {k: 2, of: [tpm, vault, local]}\n", "threshold(2;tpm,vault,local)"},
	} {
		c, err := Parse([]byte(policyBase+tc.yaml), "p.yaml")
		if err != nil {
			t.Errorf("%q: %v", tc.yaml, err)
			continue
		}
		if got := c.Policy.String(); got != tc.want {
			t.Errorf("%q parsed as %s, want %s", tc.yaml, got, tc.want)
		}
	}
	c, err := Parse([]byte(policyBase+"policy:\n  any: [vault, local]\nvolumes:\n  - name: data1\n    device: /dev/vdb\n    policy:\n      all: [vault, kmip]\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.PolicyFor("data1").String(); got != "all(vault,kmip)" {
		t.Errorf("data1's policy %s", got)
	}
	if got := c.PolicyFor("other").String(); got != "any(vault,local)" {
		t.Errorf("fleet policy %s", got)
	}
	if !c.UsesVault() || !c.UsesKMIP() {
		t.Error("a policy naming vault and kmip does not make the config use them")
	}
}

// A bad policy is refused with the file, the line of the offending node
// and what is wrong.
func TestPolicyErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct {
		yaml, want string
	}{
		{"policy:\n  any: [vault, local, tmp]\n", "p.yaml:2: policy: factor \"tmp\": unknown factor"},
		{"policy:\n  threshold: {k: 3, of: [vault, local]}\n", "p.yaml:2: policy: threshold: k is 3, want 1 to 2"},
		{"policy:\n  threshold:\n    k: two\n    of: [vault, local]\n", "p.yaml:3: policy: threshold.k: \"two\" is not a number"},
		{"policy:\n  all:\n    - local\n    - all: [vault, tpm]\n", "p.yaml:4: policy: all inside all"},
		{"policy:\n  any:\n    - all:\n      - local\n      - all: [vault, kmip]\n", "p.yaml:5: policy: all: policies nest one level only"},
		{"policy:\n  all: [local, local]\n", "p.yaml:2: policy: all: factor \"local\" is listed twice"},
		{"policy:\n  some: [local]\n", "p.yaml:2: policy: unknown policy operator \"some\""},
		{"volumes:\n  - name: d\n    device: /dev/vdb\n    policy:\n      all: [local, vault]\n", "p.yaml:5: volumes[0].policy: factor \"vault\": needs vault.address"},
		{"policy:\n  any: [local, kmip]\n", "kmip needs kmip.address"},
	} {
		t.Setenv("VAULT_ADDR", "")
		in := tc.yaml
		if !strings.Contains(tc.want, "vault.address") {
			in += "vault:\n  address: https://vault.example:8200\n"
		}
		_, err := Parse([]byte(in), "p.yaml")
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
}
