package vault

import (
	"context"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// A Vault cluster is several addresses (Config.Addresses): the active
// node and standbys, which forward to the active one (Community
// Edition) or serve Transit themselves (Enterprise performance
// standbys). atrest sends each request to one node, starting with the
// last one that answered; a node that fails at the transport level, is
// sealed or answers 5xx is skipped for downFor and the same request goes
// at once to the next node, so a dead node costs one attempt (a refused
// connection, or at most the connect or per-request timeout), not the
// operation's deadline. Only when every node failed in a round does the
// client back off before the next round.
//
// A node found dead (unreachable, its connection broken under a
// request, sealed) is remembered for the rest of the process: it is
// tried only after every other node failed, and is forgotten as down
// once it answers again. A killed node refuses every attempt, and each
// attempt that asks it first would be one more for every client. A node
// that answered a server error, or accepted a request and did not
// answer it in time, is passed over for aliveFor only: it is alive, and
// may be the active node the others forward to.

// aliveFor is how long a node that is alive but failed is tried last.
const aliveFor = 10 * time.Second

// node is one address of the cluster.
type node struct {
	addr string
	base string // addr + "/v1/": the API's paths follow it
	// slots bounds this client's concurrent requests to the node
	// (Config.MaxConcurrency), so that one atrestd, or one simulated
	// node of the storm, cannot flood a Vault node on its own.
	slots     chan struct{}
	downUntil atomic.Int64 // UnixNano; 0 = up, math.MaxInt64 = dead
}

func newNodes(cfg Config) []*node {
	var nodes []*node
	for _, a := range cfg.Addresses {
		nodes = append(nodes, &node{addr: a, base: strings.TrimSuffix(a, "/") + "/v1/", slots: make(chan struct{}, cfg.MaxConcurrency)})
	}
	return nodes
}

func (n *node) down() bool { return time.Now().UnixNano() < n.downUntil.Load() }

// markDown remembers the node as down: for the rest of the process, or
// for aliveFor if it is alive.
func (n *node) markDown(alive bool) {
	until := int64(math.MaxInt64)
	if alive {
		until = time.Now().Add(aliveFor).UnixNano()
	}
	n.downUntil.Store(until)
}

func (n *node) markUp() { n.downUntil.Store(0) }

// acquire takes one of the node's request slots, or fails when ctx ends.
func (n *node) acquire(ctx context.Context) error {
	select {
	case n.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (n *node) release() { <-n.slots }

// round is the nodes one attempt of a request may still try before the
// client backs off: each node once.
type round struct {
	tried   []bool
	reasons []string // per node, what its last attempt of the operation saw
	// election: a node of this round answered that it knows no
	// reachable active node.
	election bool
	// next is the node to try next (a standby's redirect), or -1;
	// named is the node a standby's redirect named in this round.
	next, named int
}

func (cl *Client) newRound() *round {
	return &round{tried: make([]bool, len(cl.nodes)), reasons: make([]string, len(cl.nodes)), next: -1, named: -1}
}

// nodeAt returns the index of the node whose address a redirect's
// Location starts with, or -1.
func (cl *Client) nodeAt(location string) int {
	for i, n := range cl.nodes {
		if location != "" && strings.HasPrefix(location, n.addr+"/") {
			return i
		}
	}
	return -1
}

// pick returns the index of the next node to try in r: from the
// preferred node on, the first untried node that is up, else (with
// upOnly false) the first untried one; -1 when there is none.
func (cl *Client) pick(r *round, upOnly bool) int {
	if r.next >= 0 && !r.tried[r.next] {
		return r.next
	}
	first := -1
	start := int(cl.pref.Load())
	for k := range cl.nodes {
		i := (start + k) % len(cl.nodes)
		if r.tried[i] {
			continue
		}
		if !cl.nodes[i].down() {
			return i
		}
		if first < 0 && !upOnly {
			first = i
		}
	}
	return first
}

// summary says what the nodes saw in the round, for the final error
// of a multi-address client: "vault is sealed (HTTP 503) on every
// address (3)", or grouped by reason, "vault is sealed (HTTP 503) at
// https://b:8200, https://c:8200; connection refused at https://a:8200".
func (cl *Client) summary(r *round) string {
	var reasons []string
	at := map[string][]string{}
	n := 0
	for i, why := range r.reasons {
		if why == "" {
			continue
		}
		n++
		if at[why] == nil {
			reasons = append(reasons, why)
		}
		at[why] = append(at[why], cl.nodes[i].addr)
	}
	switch {
	case n < 2 && len(cl.nodes) < 2:
		return ""
	case len(reasons) == 1 && n == len(cl.nodes):
		return reasons[0] + " on every address (" + strconv.Itoa(n) + ")"
	}
	parts := make([]string, len(reasons))
	for i, why := range reasons {
		parts[i] = why + " at " + strings.Join(at[why], ", ")
	}
	return strings.Join(parts, "; ")
}

// setToken installs the token requests carry ("" clears it).
func (cl *Client) setToken(v string) {
	if v == "" {
		cl.sent.Store(nil)
		return
	}
	cl.sent.Store(&v)
}
