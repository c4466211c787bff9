package cli

import (
	"testing"

	"github.com/atrest/atrest/integration/vm"
)

// TestRealKernelCLI runs the atrest binary's device-mapper tests
// (cliguest) in the real-kernel guest.
func TestRealKernelCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("the real-kernel tier is not part of the unit tier (-short)")
	}
	vm.Run(t, vm.Spec{
		Packages: []string{"github.com/atrest/atrest/integration/cli/cliguest"},
		Files:    map[string]string{"/usr/bin/atrest": atrestBinary(t)},
	})
}
