package memscan

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
)

// The child holds a marker in an ordinary heap slice; the scan at its exit
// must find it there, and a marker it never had must not be found.
func TestAtExitFindsHeapCopy(t *testing.T) {
	if os.Getenv("MEMSCAN_CHILD") != "" {
		b := []byte(os.Getenv("MEMSCAN_CHILD"))
		b = append(b, "-on-the-heap"...)
		os.Stdout.Write(b[:0])
		os.Exit(7)
	}
	testutil.RequireRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestAtExitFindsHeapCopy$")
	marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())
	cmd.Env = append(os.Environ(), "MEMSCAN_CHILD="+marker)
	var got []Counts
	status, err := AtExit(cmd, func(pid int) {
		var err error
		got, err = Scan(pid, []byte(marker+"-on-the-heap"), []byte(marker+"-never-there"))
		if err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if status != 7 {
		t.Fatalf("exit status %d, want 7", status)
	}
	if got[0].Plain < 1 {
		t.Fatalf("heap copy not found: %+v", got[0])
	}
	if got[1].Plain+got[1].Protected != 0 {
		t.Fatalf("found a string the child never had: %+v", got[1])
	}
}
