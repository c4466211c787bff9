package boot

import (
	"context"
	_ "embed"
	"fmt"
	"os"

	"github.com/atrest/atrest/integration/vm"
)

//go:embed initrd.sh
var initScript []byte

// initrdModules are what the initramfs needs to mount the root disk: the
// virtio PCI transport, virtio-blk and ext4 (as modprobe names them; the
// dependencies are resolved against the kernel).
var initrdModules = []string{"virtio_pci", "virtio_blk", "crc32c_generic", "ext4"}

// writeInitramfs writes the switch_root initramfs: static busybox, /init
// and the modules, in load order.
func writeInitramfs(ctx context.Context, out string, k *vm.Kernel) error {
	mods, err := k.Modules(ctx, initrdModules...)
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	defer f.Close()
	a := vm.NewArchive(f)
	for _, d := range []string{"/dev", "/proc", "/sys", "/newroot", "/usr/bin", "/usr/sbin", "/sbin"} {
		a.Dir(d, 0o755)
	}
	a.CharDev("/dev/console", 0o600, 5, 1)
	a.File("/init", 0o755, initScript)
	if err := a.CopyFile("/bin/busybox", vm.BusyboxPath); err != nil {
		return err
	}
	if err := k.ArchiveModules(a, mods, "/etc/atrest-boot/modules"); err != nil {
		return err
	}
	if err := a.Close(); err != nil {
		return err
	}
	return f.Close()
}
