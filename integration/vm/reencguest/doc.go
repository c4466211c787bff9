// Package reencguest holds the online re-encryption's real-kernel tests:
// the device-mapper stack against the one cryptsetup builds, and `atrest
// reencrypt` of a mounted ext4 volume with a writer running, killed and
// resumed. They run inside the QEMU guest of integration/vm (booted by
// integration/cli's TestRealKernelReencrypt, which ships the atrest binary
// to /usr/bin/atrest) and skip on a host without device-mapper.
package reencguest
