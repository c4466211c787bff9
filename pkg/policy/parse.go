package policy

import (
	"errors"
	"fmt"
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
