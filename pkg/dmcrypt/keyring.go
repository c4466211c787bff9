package dmcrypt

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/pkg/secret"
)

// keyDescPrefix starts the description of the logon key Open hands to
// dm-crypt; logon keys need a "prefix:" and cryptsetup uses "cryptsetup:"
// (an online re-encryption's Stack names its keys as cryptsetup does).
const keyDescPrefix = "atrest:"

// withLogonKey runs load with the key in the calling thread's keyring as a
// logon key named desc, and returns the table reference dm-crypt resolves
// (":<size>:logon:<desc>"). Logon keys cannot be read back from userspace.
//
// dm-crypt looks the key up while the table loads, in the keyrings of the
// thread issuing the ioctl, and copies it; so the goroutine stays on one OS
// thread for the whole call, and the key is revoked (its payload freed by
// the kernel) and unlinked afterwards whatever happened. This is
// cryptsetup's sequence: add to the thread keyring, load, drop.
func withLogonKey(desc string, key *secret.Key, load func(ref string) error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	id, err := unix.AddKey("logon", desc, key.Bytes(), unix.KEY_SPEC_THREAD_KEYRING)
	if err != nil {
		return fmt.Errorf("dmcrypt: add the key to the kernel keyring: %w", err)
	}
	defer func() {
		_, _ = unix.KeyctlInt(unix.KEYCTL_REVOKE, id, 0, 0, 0)
		_, _ = unix.KeyctlInt(unix.KEYCTL_UNLINK, id, unix.KEY_SPEC_THREAD_KEYRING, 0, 0)
	}()
	return load(fmt.Sprintf(":%d:logon:%s", key.Len(), desc))
}
