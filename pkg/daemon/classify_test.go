package daemon

import (
	"slices"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/volume"
)

// The daemon's failure reasons come from pkg/volume's one classification
// (the CLI's exit codes come from it too): every KMS kind is a kms_ reason
// and every reason is one the metric declares.
func TestReasonsFollowTheSharedClassification(t *testing.T) {
	for _, k := range volume.Kinds() {
		r, ok := reasonOf[k]
		if k.IsKMS() && (!ok || !strings.HasPrefix(r, "kms_")) {
			t.Errorf("KMS kind %q has reason %q", k, r)
		}
		if ok && !slices.Contains(reasons, r) {
			t.Errorf("kind %q maps to the undeclared reason %q", k, r)
		}
	}
}
