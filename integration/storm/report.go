package storm

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/atrest/atrest/pkg/kms/vault"
)

// Report is a storm's outcome, or a plain client's run of the same
// schedule (Plain).
type Report struct {
	Nodes, Volumes int
	Failed         int
	// Wall is the time from the storm's start until every node that
	// succeeded held its secrets.
	Wall time.Duration
	// P50 and P99 are per-node times from its start to its secrets.
	P50, P99 time.Duration
	// Requests are all HTTP requests to Vault; MaxRequests the most any
	// one node made; ByOp splits Requests by kind (vault.Stats.ByOp).
	Requests, MaxRequests int64
	ByOp                  map[string]int64
	// RequestsPerNode counts the nodes by the requests each made.
	RequestsPerNode map[int64]int
	// Unreached are connection attempts that reached no Vault node (a
	// dead node's refused port): not requests.
	Unreached int64
	// HandshakesFailed sums vault.Stats.HandshakeFailures: connections
	// whose TLS handshake did not complete (cut or timed out by an
	// overloaded node), retried: not requests either.
	HandshakesFailed                               int64
	Retries, Failovers, RateLimited, ElectionWaits int64
	// Hops sums vault.Stats.Hops: requests sent at once to another node
	// in a round (a standby's 307, a node that answered as down).
	Hops int64
	// Redirects sums vault.Stats.Redirects: the hops after a standby's
	// 307 (a request each).
	Redirects int64
	// ElectionPolls sums vault.Stats.ElectionPolls; PolledNodes are the
	// nodes that made any (their election_wait was shorter than the
	// election).
	ElectionPolls, PolledNodes int64
	// Probes sums vault.Stats.Probes: unauthenticated sys/health
	// questions during elections, not requests; ProbedNodes are the
	// nodes that asked any.
	Probes, ProbedNodes               int64
	NodesPerSecond, DecryptsPerSecond float64
	Results                           []Result
	FirstErrors                       []string
	fastest, slowest                  time.Duration
	backoff                           time.Duration
	logins                            int64
}

func report(results []Result, volumes int) *Report {
	r := &Report{Nodes: len(results), Volumes: volumes, Results: results, RequestsPerNode: map[int64]int{}, ByOp: map[string]int64{}}
	var lat []time.Duration
	for _, x := range results {
		st := x.Stats
		r.add(st)
		if x.Err != nil {
			r.Failed++
			if len(r.FirstErrors) < 3 {
				r.FirstErrors = append(r.FirstErrors, x.Node+": "+x.Err.Error())
			}
			continue
		}
		lat = append(lat, x.End-x.Start)
		r.Wall = max(r.Wall, x.End)
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		r.P50, r.P99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
		r.fastest, r.slowest = lat[0], lat[len(lat)-1]
		r.NodesPerSecond = float64(len(lat)) / r.Wall.Seconds()
		r.DecryptsPerSecond = r.NodesPerSecond * float64(volumes)
	}
	return r
}

func (r *Report) add(st vault.Stats) {
	r.Requests += st.Requests
	r.MaxRequests = max(r.MaxRequests, st.Requests)
	r.RequestsPerNode[st.Requests]++
	for k, v := range st.ByOp {
		r.ByOp[k] += v
	}
	r.Unreached += st.Unreached
	r.HandshakesFailed += st.HandshakeFailures
	r.Retries += st.Retries
	r.Failovers += st.Failovers
	r.RateLimited += st.RateLimited
	r.ElectionWaits += st.ElectionWaits
	r.ElectionPolls += st.ElectionPolls
	r.Hops += st.Hops
	r.Redirects += st.Redirects
	if st.ElectionPolls > 0 {
		r.PolledNodes++
	}
	r.Probes += st.Probes
	if st.Probes > 0 {
		r.ProbedNodes++
	}
	r.backoff += st.Backoff
	r.logins += st.Logins
}

// Backoff is the time the nodes waited before retries, summed.
func (r *Report) Backoff() time.Duration { return r.backoff }

// FailedWith counts the failed nodes whose error matches target.
func (r *Report) FailedWith(target error) int {
	n := 0
	for _, x := range r.Results {
		if x.Err != nil && errors.Is(x.Err, target) {
			n++
		}
	}
	return n
}

// String is the report as docs/fleet.md quotes it.
func (r *Report) String() string {
	var b strings.Builder
	if r.Failed == r.Nodes {
		fmt.Fprintf(&b, "nodes %d x %d volumes: failed %d, none unlocked\n", r.Nodes, r.Volumes, r.Failed)
	} else {
		fmt.Fprintf(&b, "nodes %d x %d volumes: failed %d, every node unlocked after %s\n", r.Nodes, r.Volumes, r.Failed, r.Wall.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "per node: p50 %s, p99 %s, fastest %s, slowest %s\n", r.P50.Round(time.Millisecond), r.P99.Round(time.Millisecond), r.fastest.Round(time.Millisecond), r.slowest.Round(time.Millisecond))
	var dist []string
	for _, k := range slices.Sorted(maps.Keys(r.RequestsPerNode)) {
		dist = append(dist, fmt.Sprintf("%d req: %d nodes", k, r.RequestsPerNode[k]))
	}
	var kinds []string
	for _, k := range slices.Sorted(maps.Keys(r.ByOp)) {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, r.ByOp[k]))
	}
	fmt.Fprintf(&b, "vault requests: %d (%.2f per node, max %d; %s), logins %d\n", r.Requests, float64(r.Requests)/float64(r.Nodes), r.MaxRequests, strings.Join(dist, ", "), r.logins)
	fmt.Fprintf(&b, "by kind: %s\n", strings.Join(kinds, ", "))
	fmt.Fprintf(&b, "retries %d, failovers %d, election waits %d (then polls %d by %d nodes), hops %d (after a standby's 307: %d), 429s %d, backoff waited %s in total; connections refused %d, TLS handshakes failed %d (no request)\n", r.Retries, r.Failovers, r.ElectionWaits, r.ElectionPolls, r.PolledNodes, r.Hops, r.Redirects, r.RateLimited, r.backoff.Round(time.Millisecond), r.Unreached, r.HandshakesFailed)
	if r.Probes > 0 {
		fmt.Fprintf(&b, "election probes (sys/health, unauthenticated, not requests): %d by %d nodes (%.1f per probing node)\n", r.Probes, r.ProbedNodes, float64(r.Probes)/float64(r.ProbedNodes))
	}
	fmt.Fprintf(&b, "throughput: %.0f nodes/s (%.0f decrypts/s)\n", r.NodesPerSecond, r.DecryptsPerSecond)
	for _, e := range r.FirstErrors {
		fmt.Fprintf(&b, "failed: %s\n", e)
	}
	return b.String()
}
