package storm

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is Linux's USER_HZ, the unit of /proc/PID/stat's times.
const clockTick = 10 * time.Millisecond

// CPU returns the CPU time (user plus system) process pid has used so
// far; pid 0 is this process. A storm's report shows where the
// machine's cores went: the simulated nodes (this process) or Vault.
func CPU(pid int) (time.Duration, error) {
	p := "/proc/self/stat"
	if pid != 0 {
		p = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after
	// its closing parenthesis are fixed: utime and stime are 14 and 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: %d fields", p, len(f))
	}
	var total time.Duration
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", p, err)
		}
		total += time.Duration(n) * clockTick
	}
	return total, nil
}
