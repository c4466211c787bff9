package testutil

import (
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// GuestEnv is set to 1 by the real-kernel VM tier's init in the guest.
const GuestEnv = "ATREST_VM_GUEST"

// InGuest reports whether the test runs inside the real-kernel VM tier's
// guest, where every requirement is expected to be met.
func InGuest() bool { return os.Getenv(GuestEnv) == "1" }

// RequireDeviceMapper gates a test that needs dm-crypt (and so root and
// loop devices). Inside the VM guest a missing device-mapper fails the
// test. Anywhere else it skips with the reason, even in strict mode: the
// development and CI kernels have no device-mapper, and the real-kernel
// tier (go test ./integration/vm) runs these tests in a guest instead.
func RequireDeviceMapper(t testing.TB) {
	t.Helper()
	if testing.Short() && !InGuest() {
		t.Skip("needs device-mapper; not part of the unit tier (-short)")
	}
	if err := probeDeviceMapper(); err != nil {
		if InGuest() {
			t.Fatalf("device-mapper missing inside the VM guest: %v", err)
		}
		t.Skipf("needs device-mapper, which this kernel lacks (%v); the VM tier runs this test: go test ./integration/vm", err)
	}
	RequireRoot(t)
}

// probeDeviceMapper opens the control node and asks for the interface
// version: on kernels without device-mapper the node may exist and fail
// only when opened (ENODEV).
func probeDeviceMapper() error {
	f, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var hdr unix.DmIoctl
	hdr.Version = [3]uint32{4, 0, 0}
	hdr.Data_size = unix.SizeofDmIoctl
	hdr.Data_start = unix.SizeofDmIoctl
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.DM_VERSION, uintptr(unsafe.Pointer(&hdr))); errno != 0 {
		return os.NewSyscallError("device-mapper version ioctl", errno)
	}
	return nil
}
