package storm

import (
	"bufio"
	"fmt"
	"os"
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
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 16<<10), 1<<20)
	var names []string
	found := false
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, name := range names {
			if name == "ListenOverflows" && i < len(fields) {
				if overflows, err = strconv.ParseInt(fields[i], 10, 64); err != nil {
					return 0, 0, fmt.Errorf("/proc/net/netstat: %w", err)
				}
				found = true
			}
		}
		break
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if !found {
		return 0, 0, fmt.Errorf("/proc/net/netstat: no TcpExt ListenOverflows")
	}
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return 0, 0, err
	}
	if somaxconn, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err != nil {
		return 0, 0, fmt.Errorf("somaxconn: %w", err)
	}
	return overflows, somaxconn, nil
}
