// Package boot is atrest's booted-Debian test tier: it boots a real
// Debian bookworm system with systemd under QEMU (software emulation, the
// same Debian kernel as integration/vm) so that tests can prove what only a
// booted system shows: units ordered against cryptsetup.target and fstab
// mounts, state that survives a reboot, the journal.
//
// The root file system is built once per machine with debootstrap and
// kept as an ext4 image in the cache (see PrepareImage), keyed on what
// goes into it. Each test gets a Machine: its own copy of that image as
// virtio disk 0, raw data disks it creates (virtio disks 1, 2...), and
// files it puts into the root file system before a boot (host binaries,
// unit files, a `make install DESTDIR=` tree). Files are written into the
// image on the host with debugfs, so nothing is mounted on the host.
//
// A small busybox initramfs loads the virtio and ext4 modules and
// switch_roots into the root disk; systemd takes it from there. After the
// target a boot names (multi-user.target by default) a runner unit runs
// the boot's checks (shell scripts or host programs), sends their output
// and exit status over the second serial port, and powers the guest off.
// Machine.Boot turns that into go test results: a check that fails, a
// check that never reported, a boot that never reached its target, an
// emergency shell, a panic or a timeout each fail the test, naming the
// console log.
package boot
