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

// TestRealKernelTPM runs the TPM tests in a guest with a TPM 2.0 (swtpm
// behind QEMU's tpm-tis): pkg/tpm2 over /dev/tpmrm0, kms: tpm, and
// systemd's cryptsetup token plugin opening an atrest-enrolled volume.
func TestRealKernelTPM(t *testing.T) {
	vm.Run(t, vm.Spec{TPM: true, Packages: []string{
		"github.com/atrest/atrest/integration/vm/tpmguest",
	}})
}
