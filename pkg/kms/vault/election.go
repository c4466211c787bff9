package vault

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"time"
)

// An operation that finds the cluster electing (its node died under a
// request, or a standby knows no reachable active node) learns the
// election's end from the cluster itself instead of sleeping a fixed
// time: it asks the surviving nodes' sys/health, one node every
// 200-400 ms, and sends its one retry to the node that reports itself
// active (initialised, unsealed, not a standby) as soon as one does.
// sys/health is unauthenticated and served by each node from memory
// and its local storage: no token is sent, it is not audited, not
// forwarded, writes nothing, and is exempt from rate-limit quotas by
// default (sys/leader, which also names the active node, is not), see
// docs/fleet.md; so these probes are counted apart from requests
// (Stats.Probes). Config.ElectionWait bounds the wait: a client that
// cannot reach the active node (a partition, a proxy refusing
// sys/health) retries after it anyway, through a standby that
// forwards.

// probeEvery is the pause (up to twice as long, at random) between
// probes: a fleet of N clients in an election asks about N / 0.3 s
// times a second, each probe a small GET on a kept-alive connection.
const probeEvery = 200 * time.Millisecond

// probeTimeout bounds one probe: a node that becomes active holds its
// state lock (which sys/health takes) while it sets itself up.
const probeTimeout = time.Second

// awaitLeader probes the cluster for at most limit (and within ctx)
// until a node of the client answers that it is the active node, and
// returns its index, or -1 when limit or ctx ended first.
func (cl *Client) awaitLeader(ctx context.Context, limit time.Duration) int {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	turn := rand.N(len(cl.nodes))
	for {
		i := cl.probeTarget(&turn)
		if cl.probe(ctx, cl.nodes[i]) {
			cl.nodes[i].markUp()
			return i
		}
		t := time.NewTimer(probeEvery + rand.N(probeEvery))
		select {
		case <-ctx.Done():
			t.Stop()
			return -1
		case <-t.C:
		}
	}
}

// probeTarget returns the next node to probe in turn: the nodes not
// known down, or every node in turn when all are.
func (cl *Client) probeTarget(turn *int) int {
	for range cl.nodes {
		*turn = (*turn + 1) % len(cl.nodes)
		if !cl.nodes[*turn].down() {
			return *turn
		}
	}
	// All down: the loop came back to where it started; move on one.
	*turn = (*turn + 1) % len(cl.nodes)
	return *turn
}

// probe asks node n's sys/health whether it is the active node
// (false when it is not, or did not answer).
func (cl *Client) probe(ctx context.Context, n *node) bool {
	cl.probes.Add(1)
	pctx, cancel := context.WithTimeout(ctx, min(probeTimeout, cl.cfg.Timeout))
	defer cancel()
	resp, err := cl.send(pctx, call{method: http.MethodGet, path: "sys/health", anon: true, params: healthParams}, n)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, err := readBody(resp.Body, resp.ContentLength)
	var h struct {
		Initialized, Sealed, Standby bool
	}
	return err == nil && resp.StatusCode/100 == 2 && json.Unmarshal(body, &h) == nil && h.Initialized && !h.Sealed && !h.Standby
}

// healthParams make sys/health answer 299 in every state it would
// report with another code (uninitialised, sealed, standby, a DR or
// performance secondary), as Vault's own client asks, so that a probe
// reads the state from the body.
var healthParams = map[string][]string{
	"uninitcode": {"299"}, "sealedcode": {"299"}, "standbycode": {"299"},
	"drsecondarycode": {"299"}, "performancestandbycode": {"299"},
}
