package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil/swtpmtest"
)

// policyNode is a node on the local keystore (kms: local) whose
// configuration also has the TPM sw, so policies over tpm and local can
// be set; extra is appended to the configuration.
func policyNode(t *testing.T, sw *swtpmtest.TPM, extra string) *node {
	n := newNode(t)
	n.writeConfig(sw.Device, extra)
	return n
}

// writeConfig writes the configuration of policyNode with tpm.device
// device.
func (n *node) writeConfig(device, extra string) {
	n.t.Helper()
	doc := fmt.Sprintf("kms: local\nlocal:\n  keystore: %s/kek\nstate_dir: %s/state\nrecovery:\n  mode: none\ntpm:\n  device: %q\n  pcrs: [7]\n%s",
		n.dir, n.dir, device, extra)
	if err := os.WriteFile(n.config, []byte(doc), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

type policySetDoc struct {
	Volumes []struct {
		Name string
		From struct {
			Policy   string
			KMS      string
			Keyslots []int
		}
		To struct {
			Policy   string
			KMS      string
			Keyslots []int
		}
		Unchanged bool
		Warnings  []string
		Error     string
		ExitCode  int `json:"exit_code"`
	}
}

func (n *node) policyOf(img string) string {
	n.t.Helper()
	var doc struct {
		Volumes []struct {
			Policy *struct{ Expr string }
		}
	}
	r := n.run("", "-o", "json", "status", img)
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Volumes) != 1 {
		n.t.Fatalf("status: %v: %s", err, r)
	}
	if doc.Volumes[0].Policy == nil {
		return ""
	}
	return doc.Volumes[0].Policy.Expr
}

// atrest policy set moves a volume onto a policy over the TPM and the
// local keystore and back, in text and JSON, refuses bad policies and a
// factor that is down with their own exit codes and without a change,
// and applies the configuration's policy with --from-config.
func TestPolicySetCommand(t *testing.T) {
	sw := swtpmtest.Start(t)
	n := policyNode(t, sw, "")
	img := n.volume("data1")

	r := n.expect(ExitOK, "policy", "set", img, "all: [tpm, local]")
	if !strings.Contains(r.stdout, "data1: kms local, no policy (keyslot 0) -> policy all(tpm,local) (keyslot 1)") {
		t.Fatalf("text output: %s", r)
	}
	if !strings.Contains(r.stderr, "the configuration names no policy (the kms: backend alone) for data1") {
		t.Fatalf("no warning that the configuration differs: %s", r)
	}
	if got := n.policyOf(img); got != "all(tpm,local)" {
		t.Fatalf("status says policy %q", got)
	}
	r = n.expect(ExitOK, "-o", "json", "policy", "set", img, "all: [tpm, local]")
	var doc policySetDoc
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Volumes) != 1 || !doc.Volumes[0].Unchanged || doc.Volumes[0].To.Policy != "all(tpm,local)" {
		t.Fatalf("the same policy again: %v: %s", err, r)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{img, "any: [tpm, nosuch]"}, `factor "nosuch"`},
		{[]string{img, "threshold: {k: 3, of: [tpm, local]}"}, "k is 3"},
		{[]string{img, "any: [tpm"}, "not a policy"},
		{[]string{img}, "got 1 arguments"},
		{[]string{img, "--none", "--resume"}, "exclude each other"},
		{[]string{img, "none"}, "hint: atrest policy set NAME --none"},
		{[]string{"--all", "local", "--recovery-key"}, "--recovery-key with more than one volume, --all"},
		{[]string{img, "local", "--key-file", "/dev/null"}, "--key-file goes with --recovery-key"},
	} {
		r := n.expect(ExitUsage, append([]string{"policy", "set"}, c.args...)...)
		if !strings.Contains(r.stderr, c.want) {
			t.Fatalf("policy set %q: want %q in: %s", c.args, c.want, r)
		}
	}

	// The TPM gone (tpm.device names none): all(tpm,local) cannot give
	// the volume key; the error names the TPM, with its exit code, and the
	// header is as it was.
	n.writeConfig(n.dir+"/no-such-tpm", "")
	before := n.status(img)
	r = n.expect(ExitNoTPM, "policy", "set", img, "local")
	if !strings.Contains(r.stderr, "missing tpm") {
		t.Fatalf("the error does not name the factor: %s", r)
	}
	if after := n.status(img); fmt.Sprint(after.Keyslots) != fmt.Sprint(before.Keyslots) {
		t.Fatalf("a refused policy set changed the keyslots: %v -> %v", before.Keyslots, after.Keyslots)
	}
	if got := n.policyOf(img); got != "all(tpm,local)" {
		t.Fatalf("after a refused policy set the policy is %q", got)
	}

	n.writeConfig(sw.Device, fmt.Sprintf("volumes:\n  - name: data1\n    device: %s\n    policy:\n      any: [tpm, local]\n", img))
	// By name, not --all: go test runs packages side by side, and --all
	// would also find the atrest volumes another package's test has on a
	// loop device at that moment (made under another keystore).
	r = n.expect(ExitOK, "policy", "set", img, "--from-config")
	if got := n.policyOf(img); got != "any(tpm,local)" || strings.Contains(r.stderr, "warning") {
		t.Fatalf("--from-config: policy %q: %s", got, r)
	}
	r = n.expect(ExitOK, "policy", "set", img, "--none")
	if got := n.policyOf(img); got != "" || !strings.Contains(r.stdout, "-> kms local, no policy") {
		t.Fatalf("--none: policy %q: %s", got, r)
	}
	r = n.expect(ExitOK, "policy", "set", img, "--resume")
	if !strings.Contains(r.stdout, "data1: nothing to resume") {
		t.Fatalf("--resume with nothing interrupted: %s", r)
	}
}

// rewrap --to refuses a policy volume with a usage error that says why,
// and changes nothing; so does reencrypt with the TPM gone (every factor
// must answer), with the TPM's exit code; reencrypt re-encrypts it with its policy made
// again on new keyslots (its output says the policy's keyslots before and
// after), after which status is healthy; reencrypt --resume with nothing
// to resume says so and writes nothing.
func TestPolicyVolumeRewrapToAndReencrypt(t *testing.T) {
	sw := swtpmtest.Start(t)
	n := policyNode(t, sw, "policy:\n  any: [tpm, local]\n")
	img := n.volume("data1")
	before := n.status(img)
	r := n.expect(ExitUsage, "rewrap", img, "--to", "tpm")
	if !strings.Contains(r.stderr, "atrest policy set") {
		t.Fatalf("rewrap --to of a policy volume: %s", r)
	}
	r = n.expect(ExitOK, "reencrypt", img, "--resume")
	if !strings.Contains(r.stdout, "data1: nothing to resume") {
		t.Fatalf("reencrypt --resume with nothing to resume: %s", r)
	}
	if after := n.status(img); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a refusal changed the volume: %v -> %v", before, after)
	}
	// The TPM gone: the old policy opens through local, but the tpm
	// factor cannot wrap its new share; the error names it, with the
	// TPM's exit code, and the image is byte-identical.
	n.writeConfig(n.dir+"/no-such-tpm", "policy:\n  any: [tpm, local]\n")
	image, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	r = n.expect(ExitNoTPM, "reencrypt", img)
	if !strings.Contains(r.stderr, "policy factor tpm") {
		t.Fatalf("reencrypt with the TPM gone: %s", r)
	}
	if now, _ := os.ReadFile(img); !bytes.Equal(now, image) {
		t.Fatal("a refused reencrypt changed the image")
	}
	n.writeConfig(sw.Device, "policy:\n  any: [tpm, local]\n")
	r = n.expect(ExitOK, "reencrypt", img)
	if !strings.Contains(r.stdout, "under a new volume key, policy any(tpm,local) (keyslots 0, 1) -> policy any(tpm,local) (keyslots ") {
		t.Fatalf("reencrypt of a policy volume: %s", r)
	}
	if got := n.policyOf(img); got != "any(tpm,local)" {
		t.Fatalf("after reencrypt the policy is %q", got)
	}
	n.expect(ExitOK, "status", img)
	// -o json names the policy's keyslots before and after.
	r = n.expect(ExitOK, "-o", "json", "reencrypt", img)
	var doc struct {
		Volumes []struct {
			Policy *struct {
				Expr        string
				OldKeyslots []int `json:"old_keyslots"`
				NewKeyslots []int `json:"new_keyslots"`
			}
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Volumes) != 1 || doc.Volumes[0].Policy == nil {
		t.Fatalf("-o json reencrypt: %v: %s", err, r)
	}
	p := doc.Volumes[0].Policy
	if p.Expr != "any(tpm,local)" || len(p.OldKeyslots) != 2 || len(p.NewKeyslots) != 2 || slices.ContainsFunc(p.NewKeyslots, func(s int) bool { return slices.Contains(p.OldKeyslots, s) }) {
		t.Fatalf("-o json reencrypt: policy %+v", p)
	}
}

// status --long of a policy volume says the policy, whether the factors
// that answer now satisfy it, per factor whether it answers and whether
// it opens the volume alone, and which factors last unlocked it.
func TestStatusTextOfAPolicy(t *testing.T) {
	sw := swtpmtest.Start(t)
	n := policyNode(t, sw, "policy:\n  any: [tpm, local]\n")
	img := n.volume("data1")
	want := func(r run, lines ...string) {
		t.Helper()
		// Column widths vary: compare with runs of blanks as one.
		out := strings.Join(strings.Fields(r.stdout), " ")
		for _, l := range lines {
			if !strings.Contains(out, strings.Join(strings.Fields(l), " ")) {
				t.Fatalf("status --long lacks %q:\n%s", l, r)
			}
		}
	}
	r := n.expect(ExitOK, "status", "--long", img)
	want(r, "policy       any(tpm,local): satisfied by the factors that answer now",
		`factor tpm   tpm key "`, ": answers, opens the volume alone",
		`factor local local key "`, "last unlock  not recorded on this node")
	if r := n.expect(ExitOK, "status", img); !strings.Contains(strings.Join(strings.Fields(r.stdout), " "), "closed policy any(tpm,local) none current ok") {
		t.Fatalf("the table does not show the policy: %s", r)
	}

	var doc struct{ Volumes []struct{ UUID string } }
	if err := json.Unmarshal([]byte(n.expect(ExitOK, "-o", "json", "status", img).stdout), &doc); err != nil || len(doc.Volumes) != 1 {
		t.Fatalf("status JSON: %v", err)
	}
	// What an open (atrest open, atrestd) records: this host has no
	// device-mapper to open with.
	rec := `{"by":["tpm"],"at":"2026-12-01T08:00:00Z"}`
	if err := os.MkdirAll(n.dir+"/state/unlocked", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.dir+"/state/unlocked/"+doc.Volumes[0].UUID+".json", []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	n.expect(ExitOK, "policy", "set", img, "all: [tpm, local]")
	n.writeConfig(n.dir+"/no-such-tpm", "policy:\n  all: [tpm, local]\n")
	r = n.expect(ExitAttention, "status", "--long", img)
	want(r, "policy       all(tpm,local): NOT satisfied", ": broken: ", "last unlock  by tpm at 2026-12-01T08:00:00Z")
	if strings.Contains(r.stdout, "opens the volume alone") {
		t.Fatalf("a factor of all(tpm,local) is said to open alone:\n%s", r)
	}
}

// With the old policy's TPM gone, policy set --recovery-key reads the
// recovery key (here from --key-file) and moves the volume to a policy
// without the TPM; the recovery key still opens it afterwards.
func TestPolicySetWithRecoveryKey(t *testing.T) {
	sw := swtpmtest.Start(t)
	n := policyNode(t, sw, "policy:\n  all: [tpm, local]\n")
	img := n.image("data1.img", 20)
	var f struct{ Recovery struct{ Key string } }
	if err := json.Unmarshal([]byte(n.expect(ExitOK, "-o", "json", "format", img, "--name", "data1", "--recovery", "print").stdout), &f); err != nil || f.Recovery.Key == "" {
		t.Fatalf("format: %v", err)
	}
	keyFile := n.dir + "/data1.recovery"
	if err := os.WriteFile(keyFile, []byte(f.Recovery.Key), 0o600); err != nil {
		t.Fatal(err)
	}
	n.writeConfig(n.dir+"/no-such-tpm", "")
	n.expect(ExitNoTPM, "policy", "set", img, "local")
	r := n.expect(ExitOK, "policy", "set", img, "local", "--recovery-key", "--key-file", keyFile)
	if !strings.Contains(r.stdout, "policy all(tpm,local) (keyslot 0) -> policy local (keyslot 2)") {
		t.Fatalf("text output: %s", r)
	}
	if got := n.policyOf(img); got != "local" {
		t.Fatalf("policy %q after policy set with the recovery key", got)
	}
	if r := n.run("", "recovery", "reseal", img, "--key-file", keyFile); r.code != ExitOK {
		t.Fatalf("the recovery key no longer opens the volume: %s", r)
	}
}
