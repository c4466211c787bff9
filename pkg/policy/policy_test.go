package policy

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
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

// The nested shapes compile to keyslots that are satisfied exactly when
// the policy is: an all or threshold inside an any (one keyslot per
// member), and an any inside an all or threshold (one keyslot per choice
// of a factor from each any), in the configuration's syntax with or
// without braces.
func TestNestedBranches(t *testing.T) {
	ok := func(string) error { return nil }
	for _, c := range []struct {
		text, expr string
		want       []Branch
	}{
		{"any: [all: [tpm, vault], kmip]", "any(all(tpm,vault),kmip)",
			[]Branch{{2, []string{"tpm", "vault"}}, {1, []string{"kmip"}}}},
		{"any: [{threshold: {k: 2, of: [tpm, vault, local]}}, kmip]", "any(threshold(2;tpm,vault,local),kmip)",
			[]Branch{{2, []string{"tpm", "vault", "local"}}, {1, []string{"kmip"}}}},
		{"all: [any: [tpm, kmip], vault]", "all(any(tpm,kmip),vault)",
			[]Branch{{2, []string{"tpm", "vault"}}, {2, []string{"kmip", "vault"}}}},
		{"threshold: {k: 2, of: [{any: [tpm, kmip]}, vault, local]}", "threshold(2;any(tpm,kmip),vault,local)",
			[]Branch{{2, []string{"tpm", "vault", "local"}}, {2, []string{"kmip", "vault", "local"}}}},
	} {
		p, err := Parse(c.text)
		if err == nil {
			err = p.Validate(ok)
		}
		if err != nil {
			t.Fatalf("%s: %v", c.text, err)
		}
		if p.String() != c.expr {
			t.Errorf("%s: canonical %s, want %s", c.text, p.String(), c.expr)
		}
		if got := p.Branches(); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: branches %v, want %v", c.text, got, c.want)
		}
	}
}

// Every shape the grammar does not allow is refused with what to write
// instead.
func TestRefusedShapes(t *testing.T) {
	ok := func(string) error { return nil }
	for text, want := range map[string]string{
		"any: [any: [tpm, vault], kmip]":                            "any inside any",
		"all: [all: [tpm, vault], kmip]":                            "all inside all",
		"all: [threshold: {k: 1, of: [tpm, vault]}, kmip]":          "threshold inside all",
		"any: [all: [any: [tpm, kmip], vault], local]":              "nest one level only",
		"all: [any: [tpm, vault], tpm]":                             `factor "tpm" is listed twice`,
		"threshold: {k: 2, of: [tpm]}":                              "k is 2",
		"all: [any: [a, b], any: [c, d], any: [e, f], any: [g, h]]": "compiles to 16 keyslots, at most 8",
		"any: [tpm": "not a policy",
		"":          "empty policy",
	} {
		p, err := Parse(text)
		if err == nil {
			err = p.Validate(ok)
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %q", text, err, want)
		}
	}
}

// The canonical form a token records parses back to the same policy, with
// the same keyslots; what is not one is refused.
func TestParseCanonicalRoundTrip(t *testing.T) {
	for _, text := range []string{
		"vault", "any: [tpm, vault]", "all: [tpm, vault]", "threshold: {k: 2, of: [tpm, vault, kmip]}",
		"any: [all: [tpm, vault], kmip]", "all: [any: [tpm, kmip], vault]",
	} {
		p, err := Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		q, err := ParseCanonical(p.String())
		if err != nil || q.String() != p.String() || !reflect.DeepEqual(q.Branches(), p.Branches()) {
			t.Fatalf("%s: canonical %s parsed to %v, %v", text, p, q, err)
		}
	}
	for _, bad := range []string{"", "any(tpm,vault", "any(tpm,vault))", "threshold(x;tpm)", "nope(tpm)", "any(,vault)"} {
		if _, err := ParseCanonical(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
