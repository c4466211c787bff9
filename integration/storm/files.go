package storm

import (
	"fmt"
	"os"
	"syscall"
)

// FilesPerNode is what one simulated node may hold open at the worst
// moment of a storm: its connection to Vault, a second one while it
// fails over or probes the survivors' sys/health during an election, and
// a spare for its retry.
const FilesPerNode = 3

// RaiseFileLimit makes room for a fleet of nodes in this one process:
// each real machine of a fleet has a descriptor table of its own, the
// simulator shares one, and at M = 10,000 an election doubles the
// connections. It raises RLIMIT_NOFILE's soft limit to FilesPerNode
// descriptors per node plus 1,024, and the hard limit too where the
// process may (CAP_SYS_RESOURCE; capped by fs.nr_open); it never lowers
// either. The Vault processes started afterwards inherit it. It returns
// the limit now in force, and an error saying so when that is short of
// what the nodes may need.
func RaiseFileLimit(nodes int) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	want := uint64(nodes)*FilesPerNode + 1024
	if want <= lim.Cur {
		return lim.Cur, nil
	}
	if want > lim.Max {
		raised := lim
		raised.Cur, raised.Max = want, want
		if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			var max uint64
			if _, err := fmt.Sscan(string(b), &max); err == nil && max < want {
				raised.Cur, raised.Max = max, max
			}
		}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			lim = raised
		}
	}
	if lim.Cur < want {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	if lim.Cur < want {
		return lim.Cur, fmt.Errorf("open-file limit %d (the hard limit, which this process may not raise), %d nodes may need %d: an election may end in \"too many open files\"", lim.Cur, nodes, want)
	}
	return lim.Cur, nil
}
