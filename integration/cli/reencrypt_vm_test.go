package cli

import (
	"testing"
	"time"

	"github.com/atrest/atrest/integration/vm"
)

// TestRealKernelReencrypt runs the online re-encryption's tests
// (integration/vm/reencguest) in the real-kernel guest, with the atrest
// binary and e2fsck, and a TPM.
func TestRealKernelReencrypt(t *testing.T) {
	if testing.Short() {
		t.Skip("the real-kernel tier is not part of the unit tier (-short)")
	}
	vm.Run(t, vm.Spec{
		Packages: []string{"github.com/atrest/atrest/integration/vm/reencguest"},
		Programs: append(append([]string(nil), vm.DefaultPrograms...), "e2fsck"),
		Files:    map[string]string{"/usr/bin/atrest": atrestBinary(t)},
		// The guest's tests took 2-6 minutes on the Xeon machines and
		// about 10.5 on the AMD EPYC ones, whose TCG is several times
		// slower (docs/reencrypt.md): 25 minutes leaves room for load.
		Timeout: 25 * time.Minute,
		// The online TPM re-seal (TestOnlineReencryptTPM) and the tpm
		// factor of the policy volumes (TestOnlineReencryptPolicy).
		TPM: true,
	})
}
