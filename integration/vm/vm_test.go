package vm_test

import (
	"testing"

	"github.com/atrest/atrest/integration/vm"
)

// TestRealKernel runs the dm-crypt tests in a guest with a real kernel:
// pkg/dmcrypt's own tests, the unlock-path tests against cryptsetup, and
// atrestd's (pkg/daemon) opening of real volumes.
func TestRealKernel(t *testing.T) {
	vm.Run(t, vm.Spec{Packages: []string{
		"github.com/atrest/atrest/pkg/dmcrypt",
		"github.com/atrest/atrest/integration/vm/unlock",
		"github.com/atrest/atrest/pkg/daemon",
	}})
}
