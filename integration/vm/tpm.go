package vm

import (
	"context"
	"fmt"
)

// TPMLibraries are what systemd 252's cryptsetup token plugin needs in a
// guest with a TPM: the plugin itself, where cryptsetup looks for it, and
// the tpm2-tss libraries systemd and tpm2-tss dlopen (ldd cannot see
// them), each with the libraries it links.
var TPMLibraries = []string{
	"/lib/x86_64-linux-gnu/cryptsetup/libcryptsetup-token-systemd-tpm2.so",
	"/lib/x86_64-linux-gnu/libtss2-esys.so.0",
	"/lib/x86_64-linux-gnu/libtss2-rc.so.0",
	"/lib/x86_64-linux-gnu/libtss2-mu.so.0",
	"/lib/x86_64-linux-gnu/libtss2-sys.so.1",
	"/lib/x86_64-linux-gnu/libtss2-tctildr.so.0",
	"/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0",
}

// libraryFiles maps each library in libs, and every library it links, to
// the same path in the guest.
func libraryFiles(ctx context.Context, libs []string) (map[string]string, error) {
	files := map[string]string{}
	for _, l := range libs {
		if !fileExists(l) {
			return nil, fmt.Errorf("vm: %s is missing on the host (packages systemd, libtss2-esys-3.0.2-0, libtss2-tcti-device0)", l)
		}
		files[l] = l
		deps, err := ldd(ctx, l)
		if err != nil {
			return nil, err
		}
		for _, d := range deps {
			files[d] = d
		}
	}
	return files, nil
}
