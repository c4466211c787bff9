package volume

import (
	"testing"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/config"
)

// Every failpoint of a rekey and a reseal of a policy volume (two
// keyslots, one of them rebuilt from a vault and a local share): after
// the crash the volume opens through its policy and with its recovery
// key, and the next rekey completes the change with no keyslot left over.
func TestPolicyChangeInterrupted(t *testing.T) {
	s := vaulttest.Shared(t)
	for _, point := range []string{"rekey-after-add", "rekey-after-verify", "rekey-after-remove",
		"reseal-after-add", "reseal-after-verify", "reseal-after-remove"} {
		t.Run(point, func(t *testing.T) {
			interruptAndResume(t, withRecovery(policyManager(t, s, nil, "any: [{all: [vault, local]}, local]"), config.RecoveryPrint), point, 3)
		})
	}
}
