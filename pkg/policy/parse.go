package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Parse reads a policy written as the configuration writes one, e.g.
// "any: [tpm, vault]", "all: [tpm, vault]", "threshold: {k: 2, of: [tpm,
// vault, kmip]}" or a bare factor "vault" (atrest policy set takes it on
// its command line). It checks the syntax only; Validate checks the shape
// and the factors.
func Parse(text string) (*Policy, error) {
	if strings.TrimSpace(text) == "" {
		return nil, errors.New("empty policy (write e.g. 'any: [tpm, vault]')")
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(text), &n); err != nil {
		return nil, fmt.Errorf("not a policy: %v", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if n.Kind != yaml.DocumentNode || len(n.Content) != 1 {
		return nil, errors.New("not a policy (write e.g. 'any: [tpm, vault]')")
	}
	return fromNode(n.Content[0], 0)
}

// ParseCanonical reads a policy in the canonical form String writes and
// tokens record ("any(tpm,vault)", "threshold(2;tpm,vault,kmip)",
// "any(all(tpm,vault),kmip)"): what a change that keeps a volume's policy
// (the re-seal of its tpm factor) makes its key material under again.
// String of the result is text.
func ParseCanonical(text string) (*Policy, error) {
	p, rest, err := canonical(text, 0)
	if err == nil && rest != "" {
		err = fmt.Errorf("unexpected %q", rest)
	}
	if err != nil {
		return nil, fmt.Errorf("policy %q: %w", text, err)
	}
	return p, nil
}

// canonical reads one node from the start of s and returns what follows.
func canonical(s string, depth int) (*Policy, string, error) {
	i := strings.IndexAny(s, "(,;)")
	if i < 0 || s[i] != '(' {
		if i < 0 {
			i = len(s)
		}
		if i == 0 {
			return nil, "", errors.New("a factor name is missing")
		}
		return &Policy{Factor: s[:i]}, s[i:], nil
	}
	p := &Policy{Op: s[:i]}
	if depth > 1 {
		return nil, "", errors.New("policies nest one level only")
	}
	s = s[i+1:]
	switch p.Op {
	case Any, All:
	case Threshold:
		j := strings.IndexByte(s, ';')
		k, err := strconv.Atoi(s[:max(j, 0)])
		if j < 0 || err != nil {
			return nil, "", errors.New("threshold wants (K;factors)")
		}
		p.K, s = k, s[j+1:]
	default:
		return nil, "", fmt.Errorf("unknown policy operator %q", p.Op)
	}
	for {
		q, rest, err := canonical(s, depth+1)
		if err != nil {
			return nil, "", err
		}
		p.Of = append(p.Of, q)
		switch {
		case strings.HasPrefix(rest, ","):
			s = rest[1:]
			continue
		case strings.HasPrefix(rest, ")"):
			switch p.Op {
			case Any:
				p.K = 1
			case All:
				p.K = len(p.Of)
			}
			return p, rest[1:], nil
		}
		return nil, "", fmt.Errorf("%s( is not closed", p.Op)
	}
}
