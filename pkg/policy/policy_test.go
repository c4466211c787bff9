package policy

import (
	"errors"
	"testing"

	"github.com/atrest/atrest/pkg/secret"
)

func TestBranches(t *testing.T) {
	p := &Policy{Op: Any, K: 1, Of: []*Policy{
		{Op: All, K: 2, Of: []*Policy{{Factor: "local"}, {Factor: "vault"}}},
		{Factor: "kmip"},
	}}
	b := p.Branches()
	if len(b) != 2 || b[0].K != 2 || len(b[0].Factors) != 2 || b[1].K != 1 || b[1].Factors[0] != "kmip" {
		t.Fatalf("branches %+v", b)
	}
	if f := p.Factors(); len(f) != 3 {
		t.Fatalf("factors %v", f)
	}
}

// Any k of n shares rebuild the secret; fewer do not; a share is
// recognised by its digest, and another share under its name is not.
func TestSplitCombine(t *testing.T) {
	sec, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	defer sec.Wipe()
	shares, err := Split(sec, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer wipe(shares)
	for _, pair := range [][2]int{{0, 1}, {0, 2}, {1, 2}} {
		got, err := Combine(2, map[int]*secret.Key{pair[0]: shares[pair[0]], pair[1]: shares[pair[1]]})
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(sec) {
			t.Errorf("shares %v rebuild another secret", pair)
		}
		got.Wipe()
	}
	if _, err := Combine(2, map[int]*secret.Key{0: shares[0]}); !errors.Is(err, ErrTooFewShares) {
		t.Errorf("one share of 2: %v", err)
	}
	d := Digest("uuid-a", 1, shares[1])
	if err := CheckDigest("uuid-a", 1, shares[1], d); err != nil {
		t.Error(err)
	}
	if err := CheckDigest("uuid-a", 1, shares[2], d); !errors.Is(err, ErrShareMismatch) {
		t.Errorf("another share passes the digest: %v", err)
	}
	if err := CheckDigest("uuid-b", 1, shares[1], d); !errors.Is(err, ErrShareMismatch) {
		t.Errorf("the digest of another volume passes: %v", err)
	}
}
