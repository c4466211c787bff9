// Package vm is atrest's real-kernel test tier. It boots Debian's own
// kernel under QEMU in software emulation (no KVM needed) from a small
// busybox initramfs that holds Go test binaries, runs them as root inside
// the guest, and reports what they did as ordinary go test results.
//
// The development and CI kernels have loop devices but no device-mapper;
// the guest kernel has both, so dm-crypt, ext4 and the unlock path run for
// real. Everything the guest needs is prepared once per machine and cached
// (see CacheDir): the kernel package that linux-image-amd64 depends on,
// fetched with apt-get download, unpacked with dpkg -x and indexed with
// depmod. The initramfs is assembled per run from that cache, the static
// busybox, host programs with their shared libraries (cryptsetup, mke2fs
// and dmsetup serve as oracles) and the test binaries, built with
// CGO_ENABLED=0 go test -c.
//
// Run is the entry point for host tests; the building blocks it uses
// (PrepareKernel, Archive, Boot, ParseResults) are exported for tiers that
// boot something else, such as a full systemd image on a virtio disk.
package vm
