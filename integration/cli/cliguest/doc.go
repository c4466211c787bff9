// Package cliguest holds the atrest command's real-kernel tests: open,
// close, recovery unlock and the whole format-to-read cycle through
// dm-crypt. They run inside the QEMU guest of integration/vm (booted by
// integration/cli's TestRealKernelCLI, which ships the atrest binary to
// /usr/bin/atrest) and skip on a host without device-mapper.
package cliguest
