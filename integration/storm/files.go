package storm

import (
	"fmt"
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
// connections. It raises RLIMIT_NOFILE to FilesPerNode descriptors per
// node plus 1,024 (capped by fs.nr_open), the hard limit too where the
// process may (CAP_SYS_RESOURCE), else the soft limit to the hard one; it
// never lowers either. The Vault processes started afterwards inherit it.
// The error says when the limit in force is short of what the nodes may
// need.
func RaiseFileLimit(nodes int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	need := uint64(nodes)*FilesPerNode + 1024
	want := need
	if want <= lim.Cur {
		return nil
	}
	if max, err := procInt("/proc/sys/fs/nr_open"); err == nil && uint64(max) < want {
		want = uint64(max)
	}
	raised := syscall.Rlimit{Cur: want, Max: max(want, lim.Max)}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) != nil {
		// Not allowed above the hard limit: up to it, then.
		raised = syscall.Rlimit{Cur: min(want, lim.Max), Max: lim.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return err
		}
	}
	if raised.Cur < need {
		return fmt.Errorf("open-file limit %d (the hard limit, which this process may not raise), %d nodes may need %d: an election may end in \"too many open files\"", raised.Cur, nodes, need)
	}
	return nil
}
