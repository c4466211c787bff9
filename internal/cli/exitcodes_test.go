package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/luks2/luks2test"
	"github.com/atrest/atrest/pkg/volume"
)

// Every failure a script can meet through the real command line exits with
// the code docs/cli.md documents for it, not 1.
func TestDocumentedExitCodes(t *testing.T) {
	n := newNode(t)
	dir := filepath.Join(n.dir, "a-directory")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	a, b := n.volume("vola"), n.volume("volb")
	bBackup := filepath.Join(n.dir, "volb.hdr")
	n.expect(ExitOK, "header", "backup", b, "--file", bBackup)
	badToken := n.volume("badtoken")
	rewriteImage(t, badToken, func(doc map[string]any) {
		for _, tok := range luks2test.Obj(doc, "tokens") {
			if m, ok := tok.(map[string]any); ok && m["type"] == "atrest" {
				m["version"] = 99
			}
		}
	})
	for _, tc := range []struct {
		name string
		code int
		args []string
	}{
		{"config missing", ExitConfig, []string{"-c", filepath.Join(n.dir, "none.yaml"), "status"}},
		{"config is a directory", ExitConfig, []string{"-c", dir, "status"}},
		{"unknown command", ExitUsage, []string{"frobnicate"}},
		{"unknown subcommand", ExitUsage, []string{"header", "frobnicate"}},
		{"blank volume", ExitUsage, []string{"status", ""}},
		{"blank restore target", ExitUsage, []string{"header", "restore", " "}},
		{"blank open target", ExitUsage, []string{"open", ""}},
		{"directory as device", ExitNotFound, []string{"status", dir}},
		{"/dev/null as device", ExitNotFound, []string{"status", "/dev/null"}},
		{"format a directory", ExitNotFound, []string{"format", dir, "--name", "x1"}},
		{"format /dev/null", ExitNotFound, []string{"format", "/dev/null", "--name", "x2"}},
		{"missing device", ExitNotFound, []string{"header", "backup", filepath.Join(n.dir, "gone.img")}},
		{"missing backup file", ExitNotFound, []string{"header", "restore", a, "--backup", filepath.Join(n.dir, "gone.hdr")}},
		{"restore another UUID", ExitUsage, []string{"header", "restore", a, "--backup", bBackup}},
		{"empty key input", ExitUsage, []string{"recovery", "unlock", b}},
		{"unparsable token", ExitNotLUKS2, []string{"rekey", badToken}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n.t = t
			args := tc.args
			if args[0] == "-c" {
				// Without the node's configuration.
				var out, errb strings.Builder
				code := Main(append([]string{"atrest"}, args...), strings.NewReader(""), &out, &errb)
				if code != tc.code || !strings.HasPrefix(errb.String(), "atrest: error: ") {
					t.Fatalf("want exit %d, got %d: %s", tc.code, code, errb.String())
				}
				return
			}
			n.expect(tc.code, args...)
		})
	}
	// The refused restore changed nothing.
	n.t = t
	var st struct {
		Volumes []struct{ Name string } `json:"volumes"`
	}
	if err := json.Unmarshal([]byte(n.expect(ExitOK, "-o", "json", "status", a).stdout), &st); err != nil || st.Volumes[0].Name != "vola" {
		t.Fatalf("the volume changed after a refused restore: %v %+v", err, st)
	}
}

// A change that is complete succeeds even when the header backup cannot
// be written afterwards: the command says what it did (and shows a new
// recovery key) and warns how to make the backup, instead of reporting an
// error for a change that happened.
func TestBackupFailureAfterAChangeIsAWarning(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		// out is what stdout must say.
		out string
	}{
		{"rekey", []string{"rekey"}, "data1: rekeyed"},
		{"rekey --recovery", []string{"rekey", "--recovery", "--recovery-mode", "print"}, "the recovery key is shown once"},
		{"recovery rotate", []string{"recovery", "rotate", "--mode", "print"}, "the recovery key is shown once"},
		{"rewrap", []string{"rewrap", "--force"}, "data1: rewrapped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			img := n.volume("data1")
			unblock := n.blockBackup(img)
			r := n.expect(ExitOK, append(tc.args, img)...)
			if !strings.Contains(r.stdout, tc.out) || !strings.Contains(r.stderr, "run: atrest header backup data1") {
				t.Fatalf("%s does not report the completed change and the backup to make: %s", tc.name, r)
			}
			if tc.out == "the recovery key is shown once" && !recKeyRE.MatchString(r.stdout) {
				t.Fatalf("the new recovery key was not shown: %s", r)
			}
			unblock()
			if r := n.expect(ExitAttention, "status", img); !strings.Contains(r.stdout, "header backup is older than the header") {
				t.Fatalf("status does not see the stale backup: %s", r)
			}
		})
	}
	t.Run("adopt", func(t *testing.T) {
		n := newNode(t)
		img := n.cryptsetupImage("plain.img", "passphrase")
		n.expect(ExitOK, "header", "backup", img)
		n.blockBackup(img)
		r := n.run("passphrase\n", "adopt", img, "--name", "legacy", "--recovery", "print")
		if r.code != ExitOK || !strings.Contains(r.stdout, "adopted") || !recKeyRE.MatchString(r.stdout) || !strings.Contains(r.stderr, "run: atrest header backup legacy") {
			t.Fatalf("adopt does not report the adoption, its recovery key and the backup to make: %s", r)
		}
	})
}

// blockBackup makes the next write of the state directory's backup of the
// volume at img fail (a non-empty directory sits where its temporary file
// goes) and returns the undo.
func (n *node) blockBackup(img string) func() {
	n.t.Helper()
	var st struct {
		Volumes []struct {
			Backup struct{ Path string }
		} `json:"volumes"`
	}
	r := n.run("", "-o", "json", "status", img)
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Volumes) != 1 {
		n.t.Fatalf("status: %v: %s", err, r)
	}
	blocker := st.Volumes[0].Backup.Path + ".new"
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o700); err != nil {
		n.t.Fatal(err)
	}
	return func() {
		if err := os.RemoveAll(blocker); err != nil {
			n.t.Fatal(err)
		}
	}
}

// Every kind of the shared classification has an exit code here: a kind
// added in pkg/volume without one fails this test, not a script.
func TestEveryKindHasAnExitCode(t *testing.T) {
	for _, k := range volume.Kinds() {
		if _, ok := classes[k]; !ok {
			t.Errorf("kind %q has no exit code", k)
		}
	}
}

// rewriteImage applies mutate to the LUKS2 metadata of the image at path.
func rewriteImage(t *testing.T, path string, mutate func(doc map[string]any)) {
	t.Helper()
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := luks2test.Rewrite(img, mutate); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
}
