package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/kmiptest"
	"github.com/atrest/atrest/pkg/kms/kmip"
)

// kmipNode is a node whose platform secrets a KMIP key manager wraps
// (docs/kmip.md): the node's client certificate, its root-only key, the
// key manager's CA, a key named for the test.
func kmipNode(t *testing.T, s *kmiptest.Server, id kmiptest.Identity, key string) *node {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	dir := t.TempDir()
	n := &node{t: t, dir: dir, config: filepath.Join(dir, "atrest.yaml")}
	n.writeConfig(kmipConfig(s.Address, s.ServerName, s.CA.File, id, key, dir))
	return n
}

func kmipConfig(addr, serverName, ca string, id kmiptest.Identity, key, dir string) string {
	return fmt.Sprintf(`kms: kmip
kmip:
  address: %s
  server_name: %s
  ca_file: %s
  cert_file: %s
  key_file: %s
  key: %s
  timeout: 1s
  deadline: 3s
recovery:
  mode: print
state_dir: %s/state
`, addr, serverName, ca, id.CertFile, id.KeyFile, key, dir)
}

// admin is the key manager's side of the test: the same identity as the
// node, as an operator's tool would use.
func kmipAdmin(t *testing.T, s *kmiptest.Server, key string) *kmip.Client {
	t.Helper()
	cl, err := kmip.New(kmip.Config{Address: s.Address, ServerName: s.ServerName, CAFile: s.CA.File,
		CertFile: s.Client.CertFile, KeyFile: s.Client.KeyFile, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// The KMIP lifecycle through the binary: kms check, format (the key is
// created and activated on first use), status, a rotation in the key
// manager makes the token stale, rewrap moves it to the new key object,
// the old object is retired (revoked), and rekey and open's unlock still
// work.
func TestKMIPLifecycle(t *testing.T) {
	s := kmiptest.Start(t)
	n := kmipNode(t, s, s.Client, "atrest-cli-life")
	dev := disk(t, 64)

	f := jsonOf[formatJSON](t, n.ok("-o", "json", "format", dev, "--name", "km1"))
	if f.KMS.Backend != "kmip" || f.KMS.Key != "atrest-cli-life" || f.KMS.KeyVersion == 0 {
		t.Fatalf("format JSON kms: %+v", f.KMS)
	}
	if f.Recovery.Key == "" || !cryptsetupAccepts(t, dev, f.Recovery.Key) {
		t.Fatal("the printed recovery key does not open the volume")
	}
	n.ok("kms", "check")
	st := jsonOf[statusJSON](t, n.ok("-o", "json", "status", "km1"))
	if k := st.Volumes[0].KMS; !st.Healthy || k.Stale || k.LatestVersion != f.KMS.KeyVersion {
		t.Fatalf("status after format: %+v", k)
	}

	// The rotation an operator would make in the key manager: a new key
	// object taking over the name (atrest kms rotate does exactly that).
	info := jsonOf[struct {
		LatestVersion int `json:"latest_version"`
	}](t, n.ok("-o", "json", "kms", "rotate"))
	st = jsonOf[statusJSON](t, n.expect(3, nil, "-o", "json", "status", "km1"))
	if k := st.Volumes[0].KMS; !k.Stale || k.LatestVersion != info.LatestVersion {
		t.Fatalf("status after the rotation: %+v, want stale with latest %d", k, info.LatestVersion)
	}
	if out := n.ok("rewrap", "km1").stdout; !strings.Contains(out, fmt.Sprintf("version %d -> %d", f.KMS.KeyVersion, info.LatestVersion)) {
		t.Fatalf("rewrap: %s", out)
	}
	n.ok("kms", "retire", "--min-version", fmt.Sprint(info.LatestVersion))
	n.ok("status", "km1")
	n.ok("rekey", "km1")
	if !cryptsetupAccepts(t, dev, f.Recovery.Key) {
		t.Fatal("the recovery key stopped working after rekey")
	}
	// This kernel has no device-mapper: open gets as far as the mapping,
	// so exit 14 (not 9, 10 or 11) says the KMS unlocked the keyslot.
	if _, err := os.Stat("/dev/mapper/control"); err != nil {
		n.expect(14, nil, "open", "km1")
	}
}

// What the key manager or the way to it can do wrong: each its own exit
// code and message, the device unchanged.
func TestKMIPFailures(t *testing.T) {
	s := kmiptest.Start(t)
	dir := t.TempDir()
	foreign := kmiptest.NewCA(t, dir, "foreign")
	good := kmipNode(t, s, s.Client, "atrest-cli-fail")
	dev := disk(t, 64)
	good.ok("format", dev, "--name", "kf1")
	before := testutil.SHA256(t, dev)
	unchanged := func(what string) {
		t.Helper()
		if testutil.SHA256(t, dev) != before {
			t.Fatalf("%s changed the device", what)
		}
	}

	wrongCert := kmipNode(t, s, foreign.Client(t, "atrest-node"), "atrest-cli-fail")
	wrongCert.expect(10, []string{"refused the client certificate"}, "rekey", dev)
	unchanged("a rekey with a client certificate the server refuses")

	untrusted := kmipNode(t, s, s.Client, "atrest-cli-fail")
	untrusted.writeConfig(kmipConfig(s.Address, s.ServerName, foreign.File, s.Client, "atrest-cli-fail", untrusted.dir))
	untrusted.expect(12, []string{"server certificate is not trusted", "unknown authority"}, "rekey", dev)
	unchanged("a rekey with an untrusted server certificate")

	// Another volume's token: same key, wrong volume UUID as the
	// additional authenticated data.
	other := disk(t, 64)
	good.ok("format", other, "--name", "kf2")
	tok := sh(t, "cryptsetup", "token", "export", "--token-id", "0", other)
	sh(t, "cryptsetup", "token", "remove", "--token-id", "0", dev)
	sh(t, "cryptsetup", "token", "import", "--token-id", "0", "--json-file", keyFile(t, strings.Replace(tok, `"kf2"`, `"kf1"`, 1)), dev)
	before = testutil.SHA256(t, dev)
	good.expect(11, []string{"rejected the ciphertext"}, "rekey", dev)
	unchanged("a rekey with another volume's token")

	// A key that exists but was never activated.
	cl := kmipAdmin(t, s, "atrest-cli-preactive")
	if _, err := cl.Create(context.Background(), "atrest-cli-preactive"); err != nil {
		t.Fatal(err)
	}
	blank := disk(t, 64)
	blankBefore := testutil.SHA256(t, blank)
	pre := kmipNode(t, s, s.Client, "atrest-cli-preactive")
	pre.expect(11, []string{"Pre-Active", "activate one in the key manager"}, "format", blank, "--name", "kf3")
	if testutil.SHA256(t, blank) != blankBefore {
		t.Fatal("a format with a Pre-Active key wrote to the device")
	}

	// Revoked, then destroyed.
	rv := disk(t, 64)
	revoked := kmipNode(t, s, s.Client, "atrest-cli-revoked")
	revoked.ok("format", rv, "--name", "kf4")
	uids, err := cl.Locate(context.Background(), "atrest-cli-revoked")
	if err != nil || len(uids) != 1 {
		t.Fatal(uids, err)
	}
	if err := cl.Revoke(context.Background(), uids[0]); err != nil {
		t.Fatal(err)
	}
	rvBefore := testutil.SHA256(t, rv)
	revoked.expect(10, []string{"Deactivated"}, "rekey", "kf4")
	if err := cl.Destroy(context.Background(), uids[0]); err != nil {
		t.Fatal(err)
	}
	revoked.expect(11, []string{"kms key not found", "gone from the key manager (destroyed)"}, "rekey", "kf4")
	if testutil.SHA256(t, rv) != rvBefore {
		t.Fatal("a rekey with a revoked or destroyed key changed the device")
	}

	// A server that accepts TCP and never answers: bounded by the deadline.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	silent := kmipNode(t, s, s.Client, "atrest-cli-fail")
	silent.writeConfig(kmipConfig(l.Addr().String(), s.ServerName, s.CA.File, s.Client, "atrest-cli-fail", silent.dir))
	silent.expect(9, []string{"kms unavailable", "timeout"}, "rekey", "kf2")

	s.Stop()
	good.expect(9, []string{"kms unavailable", "connection refused"}, "rekey", "kf2")
	if _, err := os.Stat("/dev/mapper/control"); err != nil {
		// open asks the KMS before it needs device-mapper: exit 9 here is
		// what makes the lifecycle's exit 14 mean "unlocked".
		good.expect(9, []string{"kms unavailable"}, "open", "kf2")
	}
}

// Decommission with kmip.destroy_on_erase: erasing a volume while another
// volume of the node still uses the per-node key keeps the key (with a
// warning); erasing the node's last volume revokes and destroys every
// object of the key in the key manager.
func TestKMIPEraseDestroysTheNodesLastKey(t *testing.T) {
	s := kmiptest.Start(t)
	key := "atrest-{hostname}-erase"
	n := kmipNode(t, s, s.Client, key)
	n.writeConfig(strings.Replace(kmipConfig(s.Address, s.ServerName, s.CA.File, s.Client, key, n.dir),
		"  deadline: 3s\n", "  deadline: 3s\n  destroy_on_erase: true\n", 1))
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	name := strings.ReplaceAll(key, "{hostname}", host)
	first, second := disk(t, 64), disk(t, 64)
	n.ok("format", first, "--name", "ke1")
	n.ok("format", second, "--name", "ke2")
	states := func() []kmip.State {
		t.Helper()
		cl := kmipAdmin(t, s, name)
		uids, err := cl.Locate(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		objs, _, err := cl.GetAttributes(context.Background(), uids)
		if err != nil {
			t.Fatal(err)
		}
		var out []kmip.State
		for _, o := range objs {
			out = append(out, o.State)
		}
		return out
	}

	type eraseJSON struct {
		Warnings     []string `json:"warnings"`
		KeyDestroyed string   `json:"key_destroyed"`
	}
	e := jsonOf[eraseJSON](t, n.ok("-o", "json", "erase", "ke1", "--yes", "--confirm", "ke1"))
	if e.KeyDestroyed != "" || !strings.Contains(strings.Join(e.Warnings, "\n"), "kept: 1 other volume") {
		t.Fatalf("erase of the first of two volumes: %+v, want the key kept with a warning", e)
	}
	if st := states(); len(st) != 1 || st[0] != kmip.StateActive {
		t.Fatalf("after erasing the first volume the key is %v, want one Active object", st)
	}
	n.ok("kms", "check")

	e = jsonOf[eraseJSON](t, n.ok("-o", "json", "erase", "ke2", "--yes", "--confirm", "ke2"))
	if e.KeyDestroyed != name {
		t.Fatalf("erase of the node's last volume: %+v, want key %q destroyed", e, name)
	}
	for _, st := range states() {
		if st != kmip.StateDestroyed && st != kmip.StateDestroyedCompromised {
			t.Fatalf("after erasing the last volume the key objects are %v, want destroyed", states())
		}
	}
}
