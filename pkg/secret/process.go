package secret

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// HardenProcess keeps the calling process's memory out of core dumps and
// out of reach of other processes of the same user: it sets the core file
// size limit to 0 (soft and hard, so no child of the process can raise it)
// and marks the process non-dumpable (prctl PR_SET_DUMPABLE 0), which also
// makes /proc/PID/mem, environ and the like readable only with
// CAP_SYS_PTRACE and refuses ptrace attaches by the same user. Keys live in
// locked, MADV_DONTDUMP pages already; this covers what the Go heap and the
// libraries atrest uses hold besides (a Vault token, TLS session keys, the
// AES key schedules inside crypto/aes). Both atrest and atrestd call it
// first thing in main.
func HardenProcess() error {
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		return fmt.Errorf("secret: set RLIMIT_CORE to 0: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("secret: prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}
