package secret

import (
	"os"
	"os/exec"
	"testing"

	"github.com/atrest/atrest/internal/testutil/memscan"
	"golang.org/x/sys/unix"
)

// TestHardenProcess runs HardenProcess in a child (it cannot be undone in
// the test process): the kernel then reports the child as not dumpable,
// and its core size limit is 0, soft and hard, so no child of it can raise
// it again.
func TestHardenProcess(t *testing.T) {
	if os.Getenv("ATREST_TEST_HARDEN_CHILD") == "1" {
		if err := HardenProcess(); err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(3)
		}
		if d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); err != nil || d != 0 {
			os.Stderr.WriteString("still dumpable")
			os.Exit(4)
		}
		if soft, hard, err := memscan.CoreLimit(0); err != nil || soft != "0" || hard != "0" {
			os.Stderr.WriteString("RLIMIT_CORE " + soft + "/" + hard)
			os.Exit(5)
		}
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHardenProcess$")
	cmd.Env = append(os.Environ(), "ATREST_TEST_HARDEN_CHILD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("after HardenProcess: %v: %s", err, out)
	}
}
