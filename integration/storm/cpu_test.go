package storm_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/atrest/atrest/integration/storm"
)

// cpuSnap is the CPU time used so far by this process (the simulated
// nodes) and by each Vault node of vaulttest's cluster, and, with
// vaulttest's cluster on this machine, the kernel's listen-queue
// overflows (overflows is -1 otherwise).
type cpuSnap struct {
	self, vault          time.Duration
	overflows, somaxconn int64
}

func (tg target) cpu(t *testing.T) cpuSnap {
	t.Helper()
	var s cpuSnap
	var err error
	if s.self, err = storm.CPU(0); err != nil {
		t.Fatal(err)
	}
	s.overflows = -1
	if tg.cluster != nil {
		if o, max, err := storm.ListenOverflows(); err == nil {
			s.overflows, s.somaxconn = o, max
		}
		for _, n := range tg.cluster.Nodes {
			d, err := storm.CPU(n.PID)
			if err != nil {
				continue // a killed node
			}
			s.vault += d
		}
	}
	return s
}

func (s cpuSnap) since(before cpuSnap) cpuSnap {
	d := cpuSnap{self: s.self - before.self, vault: s.vault - before.vault, overflows: -1, somaxconn: s.somaxconn}
	if s.overflows >= 0 && before.overflows >= 0 {
		d.overflows = s.overflows - before.overflows
	}
	return d
}

// per says the CPU time per node boot, on each side, and the kernel's
// listen-queue overflows meanwhile where they are known.
func (s cpuSnap) per(nodes int) string {
	out := fmt.Sprintf("cpu: simulated nodes %s (%s per node), vault %s (%s per node)",
		s.self.Round(10*time.Millisecond), (s.self / time.Duration(nodes)).Round(10*time.Microsecond),
		s.vault.Round(10*time.Millisecond), (s.vault / time.Duration(nodes)).Round(10*time.Microsecond))
	if s.overflows >= 0 {
		out += fmt.Sprintf("; listen-queue overflows %d (net.core.somaxconn %d)", s.overflows, s.somaxconn)
	}
	return out
}
