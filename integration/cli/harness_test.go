package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/looptest"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/loop"
)

func TestMain(m *testing.M) { os.Exit(vaulttest.Main(m)) }

// atrestBinary builds cmd/atrest with failpoints, once per test binary.
func atrestBinary(t testing.TB) string {
	t.Helper()
	return failpointBuild.path(t, "atrest_failpoints")
}

// atrestReleaseBinary is bin/atrest as `make build` makes it (no
// failpoints), for benchmarks.
func atrestReleaseBinary(t testing.TB) string {
	t.Helper()
	return releaseBuild.path(t, "")
}

var failpointBuild, releaseBuild atrestBuild

// atrestBuild is one build of cmd/atrest, made once per test process.
type atrestBuild struct {
	once sync.Once
	bin  string
	err  error
}

func (b *atrestBuild) path(t testing.TB, tags string) string {
	b.once.Do(func() {
		root, err := vaulttest.RepoRoot()
		if err != nil {
			b.err = err
			return
		}
		dir, err := os.MkdirTemp("", "atrest-cli-test-")
		if err != nil {
			b.err = err
			return
		}
		b.bin = filepath.Join(dir, "atrest")
		// The Makefile's tags; a release build also its -trimpath and
		// -s -w, so that benchmarks time the binary as shipped.
		args := []string{"build", "-tags", strings.TrimPrefix(tags+",urfave_cli_no_docs", ",")}
		if tags == "" {
			args = append(args, "-trimpath", "-ldflags", "-s -w")
		}
		cmd := exec.Command("go", append(args, "-o", b.bin, "./cmd/atrest")...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build atrest: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// node is one machine's atrest setup: a configuration file and a state
// directory of its own.
type node struct {
	t      *testing.T
	dir    string
	config string
	env    []string
}

// localNode is a node on the embedded default: the local keystore.
func localNode(t *testing.T, recovery string) *node {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	dir := t.TempDir()
	n := &node{t: t, dir: dir, config: filepath.Join(dir, "atrest.yaml")}
	n.writeConfig(fmt.Sprintf("kms: local\nlocal:\n  keystore: %s/kek\nstate_dir: %s/state\nrecovery:\n  mode: %s\n", dir, dir, recovery))
	return n
}

// vaultNode is a node whose platform secrets a Vault Transit key wraps and
// whose recovery keys are escrowed in Vault KV, logged in with the AppRole
// docs/vault.md sets up.
func vaultNode(t *testing.T, srv *vaulttest.Server, name string) (*node, vaulttest.Node) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	vn := vaulttest.Provision(t, srv, name, nil)
	dir := t.TempDir()
	n := &node{t: t, dir: dir, config: filepath.Join(dir, "atrest.yaml")}
	// The node keeps its own copy of the CA, as a real one does (and so it
	// outlives a server the test stops).
	ca, err := os.ReadFile(srv.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "vault-ca.pem")
	if err := os.WriteFile(caFile, ca, 0o644); err != nil {
		t.Fatal(err)
	}
	n.writeConfig(fmt.Sprintf(`kms: vault-transit
vault:
  address: %s
  ca_file: %s
  auth:
    method: approle
    role_id: %s
    secret_id_file: %s
  transit:
    key: %s
  kv:
    hostname: %s
  timeout: 2s
  deadline: 5s
recovery:
  mode: escrow
state_dir: %s/state
`, srv.Address, caFile, vn.RoleID, vn.SecretIDFile, vn.Key, name, dir))
	return n, vn
}

func (n *node) writeConfig(doc string) {
	n.t.Helper()
	if err := os.WriteFile(n.config, []byte(doc), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

// result is one run of the binary.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs atrest with n's configuration; stdin may be nil.
func (n *node) run(stdin io.Reader, args ...string) result {
	n.t.Helper()
	cmd := exec.Command(atrestBinary(n.t), append([]string{"-c", n.config}, args...)...)
	cmd.Stdin = stdin
	cmd.Env = append(os.Environ(), n.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatalf("run atrest: %v", err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// ok runs atrest and fails the test unless it exits 0.
func (n *node) ok(args ...string) result {
	n.t.Helper()
	r := n.run(nil, args...)
	if r.code != 0 {
		n.t.Fatalf("atrest %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// expect runs atrest and checks the exit code and that stderr says what
// went wrong (every fragment in want) in atrest's error form.
func (n *node) expect(code int, want []string, args ...string) result {
	n.t.Helper()
	r := n.run(nil, args...)
	if r.code != code {
		n.t.Fatalf("atrest %s: want exit %d, got %s", strings.Join(args, " "), code, r)
	}
	// Where no journal runs, the first audited command notes where the
	// audit file is (internal/logging) before any error.
	stderr := r.stderr
	for strings.HasPrefix(stderr, "atrest: note: ") {
		_, stderr, _ = strings.Cut(stderr, "\n")
	}
	if code != 0 && code != 3 && !strings.HasPrefix(stderr, "atrest: error: ") {
		n.t.Fatalf("atrest %s: stderr is not in the form 'atrest: error: ...': %s", strings.Join(args, " "), r)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			n.t.Fatalf("atrest %s: stderr lacks %q: %s", strings.Join(args, " "), w, r)
		}
	}
	return r
}

// jsonOf decodes stdout.
func jsonOf[T any](t *testing.T, r result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("stdout is not the expected JSON: %v\n%s", err, r)
	}
	return v
}

// disk is an image file on a loop device, detached when the test ends.
// Commands that would cover every atrest volume on the machine (status
// without a name, rewrap --all) name the test's volume instead: other test
// packages make atrest volumes on loop devices at the same time.
func disk(t *testing.T, sizeMiB int64) string {
	t.Helper()
	return looptest.Disk(t, sizeMiB).Path
}

// sh runs a command that must succeed and returns its output.
func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// keyFile writes a secret to a private file for cryptsetup (never argv).
func keyFile(t *testing.T, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// cryptsetupAccepts reports whether cryptsetup opens dev with the key.
func cryptsetupAccepts(t *testing.T, dev, key string) bool {
	t.Helper()
	err := exec.Command("cryptsetup", "open", "--test-passphrase", "--key-file", keyFile(t, key), dev).Run()
	return err == nil
}

// formatJSON is what `atrest -o json format` prints.
type formatJSON struct {
	Device          string `json:"device"`
	Name            string `json:"name"`
	UUID            string `json:"uuid"`
	PlatformKeyslot int    `json:"platform_keyslot"`
	KMS             struct {
		Backend    string `json:"backend"`
		Key        string `json:"key"`
		KeyVersion int    `json:"key_version"`
	} `json:"kms"`
	Recovery struct {
		Mode     string `json:"mode"`
		Keyslot  int    `json:"keyslot"`
		Location string `json:"location"`
		Key      string `json:"key"`
	} `json:"recovery"`
	SectorSize int    `json:"sector_size"`
	Backup     string `json:"backup"`
}

// statusJSON is what `atrest -o json status` prints.
type statusJSON struct {
	Schema  int  `json:"schema"`
	Healthy bool `json:"healthy"`
	Volumes []struct {
		Name       string `json:"name"`
		Device     string `json:"device"`
		UUID       string `json:"uuid"`
		State      string `json:"state"`
		Cipher     string `json:"cipher"`
		KeyBits    int    `json:"key_bits"`
		SectorSize int    `json:"sector_size"`
		Keyslots   []struct {
			ID   int    `json:"id"`
			Role string `json:"role"`
			KDF  string `json:"kdf"`
		} `json:"keyslots"`
		KMS *struct {
			Backend       string `json:"backend"`
			Key           string `json:"key"`
			KeyVersion    int    `json:"key_version"`
			LatestVersion int    `json:"latest_version"`
			Stale         bool   `json:"stale"`
			Error         string `json:"error"`
		} `json:"kms"`
		Recovery struct {
			Present  bool   `json:"present"`
			Keyslots []int  `json:"keyslots"`
			Escrow   string `json:"escrow"`
		} `json:"recovery"`
		Backup struct {
			Present bool `json:"present"`
			Current bool `json:"current"`
		} `json:"backup"`
		Problems []string `json:"problems"`
		Healthy  bool     `json:"healthy"`
	} `json:"volumes"`
}

// roles maps keyslot numbers to their roles in a status volume.
func roles(s statusJSON) map[int]string {
	out := map[int]string{}
	for _, k := range s.Volumes[0].Keyslots {
		out[k.ID] = k.Role
	}
	return out
}

// benchNode is localNode or vaultNode for a benchmark.
func benchNode(b *testing.B, srv *vaulttest.Server) *node {
	b.Helper()
	t := &testing.T{}
	if srv == nil {
		dir := b.TempDir()
		n := &node{t: t, dir: dir, config: filepath.Join(dir, "atrest.yaml")}
		doc := fmt.Sprintf("kms: local\nlocal:\n  keystore: %s/kek\nstate_dir: %s/state\nrecovery:\n  mode: none\n", dir, dir)
		if err := os.WriteFile(n.config, []byte(doc), 0o600); err != nil {
			b.Fatal(err)
		}
		return n
	}
	vn := vaulttest.Provision(b, srv, "benchnode", nil)
	dir := b.TempDir()
	n := &node{t: t, dir: dir, config: filepath.Join(dir, "atrest.yaml")}
	doc := fmt.Sprintf("kms: vault-transit\nvault:\n  address: %s\n  ca_file: %s\n  auth:\n    method: approle\n    role_id: %s\n    secret_id_file: %s\n  transit:\n    key: %s\n  kv:\n    hostname: benchnode\nrecovery:\n  mode: escrow\nstate_dir: %s/state\n",
		srv.Address, srv.CAFile, vn.RoleID, vn.SecretIDFile, vn.Key, dir)
	if err := os.WriteFile(n.config, []byte(doc), 0o600); err != nil {
		b.Fatal(err)
	}
	return n
}

func benchDisk(b *testing.B) string {
	b.Helper()
	img := filepath.Join(b.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		b.Fatal(err)
	}
	f.Close()
	d, err := loop.Attach(img, loop.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Detach() })
	return d.Path
}

func benchKeyFile(b *testing.B) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "key")
	if err := os.WriteFile(p, []byte("benchmark passphrase"), 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}
