package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
)

// node is one machine's atrest setup for in-process runs of Main: a
// configuration on the local keystore and a state directory of its own.
type node struct {
	t      *testing.T
	dir    string
	config string
}

func newNode(t *testing.T) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{t: t, dir: dir, config: filepath.Join(dir, "atrest.yaml")}
	doc := fmt.Sprintf("kms: local\nlocal:\n  keystore: %s/kek\nstate_dir: %s/state\nrecovery:\n  mode: none\n", dir, dir)
	if err := os.WriteFile(n.config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return n
}

// run is one run of atrest's Main with n's configuration.
type run struct {
	code           int
	stdout, stderr string
}

func (r run) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

func (n *node) run(stdin string, args ...string) run {
	n.t.Helper()
	var out, errb bytes.Buffer
	code := Main(append([]string{"atrest", "-c", n.config}, args...), strings.NewReader(stdin), &out, &errb)
	return run{code: code, stdout: out.String(), stderr: errb.String()}
}

// expect runs atrest and fails the test unless it exits with code and,
// for an error, prints it in atrest's form.
func (n *node) expect(code int, args ...string) run {
	n.t.Helper()
	r := n.run("", args...)
	if r.code != code {
		n.t.Fatalf("atrest %q: want exit %d, got %s", args, code, r)
	}
	if code != ExitOK && code != ExitAttention && !strings.Contains(r.stderr, "atrest: error: ") {
		n.t.Fatalf("atrest %q: no error line: %s", args, r)
	}
	return r
}

// image is a sparse image file of sizeMiB.
func (n *node) image(name string, sizeMiB int64) string {
	n.t.Helper()
	p := filepath.Join(n.dir, name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		n.t.Fatal(err)
	}
	if err := os.Truncate(p, sizeMiB<<20); err != nil {
		n.t.Fatal(err)
	}
	return p
}

// volume formats a fresh image as the atrest volume name.
func (n *node) volume(name string) string {
	n.t.Helper()
	img := n.image(name+".img", 20)
	n.expect(ExitOK, "format", img, "--name", name)
	return img
}

// jsonHas reports whether the JSON object doc has key with value want.
func jsonHas(t *testing.T, doc, key string, want any) bool {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, doc)
	}
	return m[key] == want
}

// addVolume adds a volumes entry (name on device) to n's configuration.
func (n *node) addVolume(name, device string) {
	n.t.Helper()
	doc, err := os.ReadFile(n.config)
	if err != nil {
		n.t.Fatal(err)
	}
	if !strings.Contains(string(doc), "volumes:\n") {
		doc = append(doc, "volumes:\n"...)
	}
	doc = append(doc, fmt.Sprintf("  - name: %s\n    device: %s\n", name, device)...)
	if err := os.WriteFile(n.config, doc, 0o600); err != nil {
		n.t.Fatal(err)
	}
}

// cryptsetupImage is a LUKS2 volume that cryptsetup made (atrest does not
// manage it), opened by passphrase; the test skips without cryptsetup.
func (n *node) cryptsetupImage(name, passphrase string) string {
	n.t.Helper()
	testutil.RequireCommand(n.t, "cryptsetup", "cryptsetup-bin")
	img := n.image(name, 20)
	cmd := exec.Command("cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", img)
	cmd.Stdin = strings.NewReader(passphrase)
	if out, err := cmd.CombinedOutput(); err != nil {
		n.t.Fatalf("cryptsetup luksFormat: %v\n%s", err, out)
	}
	return img
}
