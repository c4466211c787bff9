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
