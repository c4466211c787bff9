package memscan

import (
	"fmt"
	"os"
	"strings"
)

// CoreLimit returns the soft and hard RLIMIT_CORE of process pid as
// /proc/PID/limits shows them ("0", "unlimited", ...).
func CoreLimit(pid int) (soft, hard string, err error) {
	path := "/proc/self/limits"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/limits", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max core file size"); ok {
			if f := strings.Fields(rest); len(f) >= 2 {
				return f[0], f[1], nil
			}
		}
	}
	return "", "", fmt.Errorf("%s: no core file size line", path)
}
