package vault

import (
	"slices"
	"testing"
)

// The probes of an election go round the nodes not known dead, and
// round all of them when every node is (a cluster that lost its
// quorum may come back at any address): never one node only.
func TestProbeTargetTurns(t *testing.T) {
	for _, tc := range []struct {
		name string
		down []bool
		want []int
	}{
		{"one dead", []bool{true, false, false}, []int{1, 2, 1, 2}},
		{"none dead", []bool{false, false, false}, []int{1, 2, 0, 1}},
		{"all dead", []bool{true, true, true}, []int{1, 2, 0, 1}},
		{"one alive", []bool{true, false, true}, []int{1, 1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := &Client{}
			for _, d := range tc.down {
				n := &node{}
				if d {
					n.markDown(false)
				}
				cl.nodes = append(cl.nodes, n)
			}
			turn := 0
			var got []int
			for range tc.want {
				got = append(got, cl.probeTarget(&turn))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("probed %v, want %v", got, tc.want)
			}
		})
	}
}
