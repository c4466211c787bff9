package boot

import (
	"context"
	"path/filepath"
	"strings"

	"github.com/atrest/atrest/integration/vm"
	"github.com/atrest/atrest/internal/testutil/swtpmtest"
)

// AddTPM gives the machine a TPM 2.0 for every later boot: a swtpm behind
// QEMU's tpm-tis (the guest kernel's built-in tpm_tis driver makes
// /dev/tpmrm0), its state kept in the machine's work directory, so every
// boot meets the same TPM (seeds, sealed objects) with its PCRs reset, as
// a real machine does across reboots. It also puts the tpm2-tss libraries
// that systemd-cryptsetup and the cryptsetup token plugin dlopen
// (vm.TPMLibraries; the image's systemd package has the plugin but not
// them) into the guest, at their host paths.
func (m *Machine) AddTPM() {
	m.t.Helper()
	m.tpm = filepath.Join(m.work, "tpm")
	files, err := vm.LibraryFiles(context.Background(), vm.TPMLibraries)
	if err != nil {
		m.t.Fatal(err)
	}
	for guest, host := range files {
		// The libraries they link (libc, libcrypto) are the image's own.
		if strings.HasPrefix(filepath.Base(guest), "libtss2-") {
			m.CopyFile(guest, host, 0o644)
		}
	}
}

// startTPM starts this boot's swtpm when the machine has a TPM and
// returns its control socket ("" without one) and its stop.
func (m *Machine) startTPM() (string, func()) {
	if m.tpm == "" {
		return "", func() {}
	}
	q := swtpmtest.StartQEMU(m.t, m.tpm)
	return q.Socket, q.Stop
}
