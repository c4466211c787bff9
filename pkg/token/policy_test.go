package token

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A policy token round-trips with one keyslot per branch and version 2,
// while a token without a policy is still written as version 1, which
// older builds read.
func TestPolicyToken(t *testing.T) {
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	p := &Token{Keyslot: 0, Name: "data1", KMS: KMSPolicy, Key: "any(all(local,vault),kmip)", Created: now, Rotated: now,
		Policy: &Policy{Expr: "any(all(local,vault),kmip)", Branches: []Branch{
			{Keyslot: 0, K: 2, Shares: []Share{
				{Factor: "local", KMS: "local", Key: "/var/lib/atrest/kek", KeyVersion: 1, Ciphertext: "local:v1:a", Digest: "d1"},
				{Factor: "vault", KMS: "vault-transit", Key: "atrest", KeyVersion: 3, Ciphertext: "vault:v3:b", Digest: "d2"}}},
			{Keyslot: 2, K: 1, Shares: []Share{{Factor: "kmip", KMS: "kmip", Key: "atrest-n", KeyVersion: 1, Ciphertext: "kmip:v1:c"}}},
		}}}
	data, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"keyslots":["0","2"]`) || !strings.Contains(string(data), `"version":2`) {
		t.Fatalf("policy token %s", data)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if s := got.Slots(); len(s) != 2 || s[1] != 2 || got.Policy.Branches[0].Shares[1].Digest != "d2" || got.Policy.Branches[1].Shares[0].Factor != "kmip" {
		t.Fatalf("parsed %+v", got.Policy)
	}
	plain := &Token{Keyslot: 1, KMS: "local", Key: "k", KeyVersion: 1, Ciphertext: "local:v1:x", Created: now, Rotated: now}
	data, err = plain.Marshal()
	if err != nil || !strings.Contains(string(data), `"version":1`) || strings.Contains(string(data), "policy") {
		t.Fatalf("plain token %s %v", data, err)
	}
	// A policy token whose header binding disagrees with its branches is
	// refused rather than used for the wrong keyslot.
	bad := strings.Replace(string(mustMarshal(t, p)), `"keyslots":["0","2"]`, `"keyslots":["0","3"]`, 1)
	if _, err := Parse([]byte(bad)); !errors.Is(err, ErrInvalid) {
		t.Errorf("mismatched keyslots: %v", err)
	}
}

func mustMarshal(t *testing.T, tok *Token) []byte {
	data, err := tok.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Only tokens whose every secret is under the TPM or the local keystore
// open without a network (atrestd --early); a network factor anywhere,
// even in an any-of with a local branch, keeps the volume for atrestd.
// A local branch alone lets atrestd open the volume without waiting for
// the network's answers to other volumes.
func TestLocalFactors(t *testing.T) {
	share := func(f, kms string) Share { return Share{Factor: f, KMS: kms, Key: "k", Ciphertext: "c"} }
	pol := func(branches ...[]Share) *Policy {
		p := &Policy{Expr: "x"}
		for i, b := range branches {
			p.Branches = append(p.Branches, Branch{Keyslot: i, K: len(b), Shares: b})
		}
		return p
	}
	for _, tc := range []struct {
		name          string
		tok           *Token
		local, branch bool
	}{
		{"kms: local", &Token{KMS: "local"}, true, true},
		{"kms: tpm", &Token{KMS: "tpm"}, true, true},
		{"kms: vault-transit", &Token{KMS: "vault-transit"}, false, false},
		{"kms: vault-kv", &Token{KMS: "vault-kv"}, false, false},
		{"kms: kmip", &Token{KMS: "kmip"}, false, false},
		{"all: [tpm, local]", &Token{KMS: KMSPolicy, Policy: pol([]Share{share("tpm", "tpm"), share("local", "local")})}, true, true},
		{"any: [tpm, local]", &Token{KMS: KMSPolicy, Policy: pol([]Share{share("tpm", "tpm")}, []Share{share("local", "local")})}, true, true},
		{"any: [tpm, vault]", &Token{KMS: KMSPolicy, Policy: pol([]Share{share("tpm", "tpm")}, []Share{share("vault", "vault-transit")})}, false, true},
		{"any: [vault, kmip]", &Token{KMS: KMSPolicy, Policy: pol([]Share{share("vault", "vault-transit")}, []Share{share("kmip", "kmip")})}, false, false},
		{"all: [tpm, vault]", &Token{KMS: KMSPolicy, Policy: pol([]Share{share("tpm", "tpm"), share("vault", "vault-transit")})}, false, false},
		{"an empty policy", &Token{KMS: KMSPolicy, Policy: &Policy{Expr: "x"}}, false, false},
		{"no token", nil, false, false},
	} {
		if got := tc.tok.Local(); got != tc.local {
			t.Errorf("%s: Local() = %v, want %v", tc.name, got, tc.local)
		}
		if got := tc.tok.LocalBranch(); got != tc.branch {
			t.Errorf("%s: LocalBranch() = %v, want %v", tc.name, got, tc.branch)
		}
	}
}
