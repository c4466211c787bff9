package storm

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// ListenOverflows returns how often this machine's kernel has found a
// listening socket's accept queue full so far (TcpExt ListenOverflows in
// /proc/net/netstat), and the queue's bound, net.core.somaxconn (Go's
// listeners, Vault's among them, take theirs from it). With the cluster
// on the same machine as the simulated nodes, a storm's overflows are
// connections that Vault's kernel made wait or refused: at M = 10,000
// and a somaxconn of 4,096 they come with refused connects and, about
// once in 40,000 boots, a login whose connection was reset
// (docs/fleet.md).
func ListenOverflows() (overflows, somaxconn int64, err error) {
	f, err := os.Open("/proc/net/netstat")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	// TcpExt's names are on one line, its values on the next.
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 16<<10), 1<<20)
	var names, values []string
	for sc.Scan() && values == nil {
		if fields := strings.Fields(sc.Text()); len(fields) > 0 && fields[0] == "TcpExt:" {
			if names == nil {
				names = fields
			} else {
				values = fields
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	i := slices.Index(names, "ListenOverflows")
	if i < 0 || i >= len(values) {
		return 0, 0, fmt.Errorf("/proc/net/netstat: no TcpExt ListenOverflows")
	}
	if overflows, err = strconv.ParseInt(values[i], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("/proc/net/netstat: %w", err)
	}
	if somaxconn, err = procInt("/proc/sys/net/core/somaxconn"); err != nil {
		return 0, 0, err
	}
	return overflows, somaxconn, nil
}

// procInt reads a number from a file of /proc/sys.
func procInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}
