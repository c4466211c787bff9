package storm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/integration/storm"
	"github.com/atrest/atrest/internal/cli"
	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/volume"
)

// badDeadline is vault.deadline of the bad-input nodes.
const badDeadline = 4 * time.Second

// Bad input at boot, on a cluster of its own: every address wrong, a
// revoked node, a cluster that loses its quorum mid-storm, a sealed
// cluster. Each ends in its own message, kind (what atrestd reports of
// a volume) and exit code within the configured deadline, for the
// storm's nodes (atrestd's unlock: config.Parse, backends.Open,
// Set.Unwrap) and for the atrest command on a real volume (rewrap,
// which also unwraps its result to check it), and no volume changes.
func TestStormBadInput(t *testing.T) {
	vaulttest.Binary(t)
	c := vaulttest.StartCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin := c.NodeClient(t, 0)
	const nodes = 8
	fleet, err := storm.Provision(ctx, admin, c.Addresses, c.CAFile, vaulttest.Policies(t)["atrest-node"], "service", "bad", nodes, 24, 4, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts := storm.Options{VaultYAML: "  timeout: 2s\n  deadline: " + badDeadline.String() + "\n  election_wait: 1s\n"}
	revoked := fleet.Nodes[nodes-1]
	healthy := *fleet
	healthy.Nodes = fleet.Nodes[:nodes-1]
	// The first node and the one to be revoked each hold a real volume.
	vol0, volRevoked := newVolume(t, fleet, fleet.Nodes[0], opts), newVolume(t, fleet, revoked, opts)
	run := func(t *testing.T, f *storm.Fleet, o storm.Options, w want) *storm.Report {
		t.Helper()
		r, err := storm.Run(ctx, f, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("\n%s", r)
		for _, x := range r.Results {
			if x.Err != nil {
				w.check(t, x.Node, x.Err, x.End-x.Start)
			}
		}
		return r
	}

	t.Run("every address wrong", func(t *testing.T) {
		wrong := *fleet
		wrong.Addresses = closedPorts(t, 3)
		w := unavailable("connection refused on every address (3)")
		alongside(func() { vol0.rewrapFails(t, &wrong, w) }, func() {
			if r := run(t, &wrong, opts, w); r.Failed != nodes || r.Requests != 0 {
				t.Errorf("%d of %d nodes failed after %d requests, want all, and no request (nothing listens)", r.Failed, nodes, r.Requests)
			}
		})
	})

	t.Run("one node revoked, the others unaffected", func(t *testing.T) {
		if err := revoked.Revoke(ctx, admin); err != nil {
			t.Fatal(err)
		}
		w := want{kms.ErrAuth, volume.KindKMSAuth, cli.ExitKMSDenied, "kms auth"}
		if r := run(t, fleet, opts, w); r.Failed != 1 || r.Results[nodes-1].Err == nil {
			t.Errorf("%d nodes failed (%v), want only %s", r.Failed, r.FirstErrors, revoked.Name)
		}
		volRevoked.rewrapFails(t, fleet, w)
	})

	t.Run("quorum lost mid-storm", func(t *testing.T) {
		// The active node, then a second one, killed once two nodes
		// are done: the third can never elect. The nodes start within
		// 3 s, so that some start after the kills.
		o := opts
		o.Spread = 3 * time.Second
		two := make(chan struct{})
		o.OnDone = func(done int) {
			if done == 2 {
				close(two)
			}
		}
		w := unavailable("leader election under way?")
		res := make(chan *storm.Report, 1)
		go func() {
			r, err := storm.Run(ctx, &healthy, o)
			if err != nil {
				t.Error(err)
			}
			res <- r
		}()
		<-two
		active := c.KillActive(t)
		c.Kill(t, (active+1)%vaulttest.ClusterSize)
		vol0.rewrapFails(t, fleet, w)
		r := <-res
		if r == nil {
			return
		}
		t.Logf("\n%s", r)
		for _, x := range r.Results {
			if x.Err != nil {
				w.check(t, x.Node, x.Err, x.End-x.Start)
			}
		}
		if r.Failed == 0 {
			t.Error("no node failed after the quorum was lost")
		}
	})

	t.Run("sealed cluster", func(t *testing.T) {
		c.Seal(t) // the node left
		w := unavailable("vault is sealed (HTTP 503) at ")
		alongside(func() { vol0.rewrapFails(t, fleet, w) }, func() {
			if r := run(t, &healthy, opts, w); r.Failed != len(healthy.Nodes) {
				t.Errorf("%d of %d nodes failed on a sealed cluster", r.Failed, len(healthy.Nodes))
			}
		})
	})
}

// want is how a bad input must fail: the kms sentinel, the kind
// pkg/volume classifies it as (atrestd's report), the atrest command's
// exit code and part of the message.
type want struct {
	sentinel error
	kind     volume.Kind
	code     int
	msg      string
}

func unavailable(msg string) want {
	return want{kms.ErrUnavailable, volume.KindKMSUnavailable, cli.ExitKMSUnavailable, msg}
}

// check checks one failure and that it came within the deadline.
func (w want) check(t *testing.T, who string, err error, took time.Duration) {
	t.Helper()
	if !errors.Is(err, w.sentinel) || volume.Classify(err).Kind != w.kind || !strings.Contains(err.Error(), w.msg) {
		t.Errorf("%s: %v, want %v (%s) saying %q", who, err, w.sentinel, w.kind, w.msg)
	}
	// Generous: this checks "gives up at the deadline", not speed.
	if took > badDeadline+5*time.Second {
		t.Errorf("%s: gave up after %s with a %s deadline", who, took, badDeadline)
	}
}

// volumeUnderTest is a node's volume on an image file, with the
// node's atrest.yaml.
type volumeUnderTest struct {
	img, dir string
	node     *storm.Node
	opts     storm.Options
}

// newVolume formats an image file as node n's volume with the atrest
// command, through n's configuration.
func newVolume(t *testing.T, f *storm.Fleet, n *storm.Node, opts storm.Options) *volumeUnderTest {
	t.Helper()
	v := &volumeUnderTest{img: filepath.Join(t.TempDir(), n.Name+".img"), dir: t.TempDir(), node: n, opts: opts}
	if err := os.WriteFile(v.img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(v.img, 20<<20); err != nil {
		t.Fatal(err)
	}
	if code, out := v.atrest(t, f, "format", v.img, "--name", n.Name+"vol"); code != 0 {
		t.Fatalf("format: exit %d:\n%s", code, out)
	}
	return v
}

// atrest runs the atrest command with the volume's node's configuration
// on f's addresses and returns its exit code and output.
func (v *volumeUnderTest) atrest(t *testing.T, f *storm.Fleet, args ...string) (int, string) {
	t.Helper()
	cfg := filepath.Join(v.dir, "atrest.yaml")
	doc := storm.NodeConfig(f, v.node, v.opts.VaultYAML) + "state_dir: " + filepath.Join(v.dir, "state") + "\n"
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code := cli.Main(append([]string{"atrest", "-c", cfg}, args...), strings.NewReader(""), &out, &out)
	return code, out.String()
}

// rewrapFails runs atrest rewrap --force on the volume: it must exit
// with w's code and message within the deadline, and leave the device
// as it was.
func (v *volumeUnderTest) rewrapFails(t *testing.T, f *storm.Fleet, w want) {
	t.Helper()
	before := testutil.SHA256(t, v.img)
	start := time.Now()
	code, out := v.atrest(t, f, "rewrap", "--force", v.img)
	took := time.Since(start)
	t.Logf("atrest rewrap after %s: exit %d: %s", took.Round(time.Millisecond), code, strings.TrimSpace(out))
	if code != w.code || !strings.Contains(out, w.msg) {
		t.Errorf("atrest rewrap: exit %d, want %d saying %q", code, w.code, w.msg)
	}
	if took > badDeadline+5*time.Second {
		t.Errorf("atrest rewrap gave up after %s with a %s deadline", took, badDeadline)
	}
	if testutil.SHA256(t, v.img) != before {
		t.Errorf("a rewrap that failed changed %s", v.img)
	}
}

// alongside runs a and b at the same time (each waits out the deadline)
// and returns when both did.
func alongside(a, b func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		b()
	}()
	a()
	<-done
}

// closedPorts returns n https addresses where nothing listens.
func closedPorts(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, fmt.Sprintf("https://%s", ln.Addr()))
		ln.Close()
	}
	return addrs
}
