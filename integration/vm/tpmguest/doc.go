// Package tpmguest holds the real-kernel tests of atrest's TPM support:
// pkg/tpm2 over the kernel's /dev/tpmrm0 (a swtpm behind QEMU's tpm-tis),
// kms: tpm chosen by format where a TPM exists, and an atrest-enrolled TPM
// keyslot opened by cryptsetup with systemd's own token plugin. They run in
// the VM guest (go test -run TestRealKernelTPM ./integration/vm); elsewhere
// they skip for want of device-mapper and a kernel TPM.
package tpmguest
