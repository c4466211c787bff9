package cli

import (
	"os/exec"
	"strings"
	"testing"
)

// Every command documents itself: --help shows examples and the exit codes.
func TestHelpOfEveryCommand(t *testing.T) {
	n := &node{t: t, config: "/nonexistent.yaml"}
	for _, cmd := range [][]string{
		{"format"}, {"open"}, {"close"}, {"status"}, {"rekey"}, {"rewrap"}, {"policy", "set"},
		{"recovery", "unlock"}, {"recovery", "rotate"}, {"recovery", "reseal"},
		{"header", "backup"}, {"header", "restore"}, {"header", "check"},
		{"erase"}, {"adopt"}, {"kms", "check"}, {"kms", "rotate"}, {"kms", "retire"},
	} {
		r := n.run(nil, append(cmd, "--help")...)
		if r.code != 0 || !strings.Contains(r.stdout, "EXAMPLES:") || !strings.Contains(r.stdout, "EXIT CODES:") || !strings.Contains(r.stdout, "15  failed part-way") {
			t.Errorf("atrest %s --help lacks examples or exit codes: %s", strings.Join(cmd, " "), r)
		}
	}
}

// Completion scripts and the manual page come from the same definitions.
func TestCompletionAndManPage(t *testing.T) {
	n := &node{t: t, config: "/nonexistent.yaml"}
	bin := atrestBinary(t)
	bash := n.run(nil, "completion", "bash")
	if bash.code != 0 {
		t.Fatalf("completion bash: %s", bash)
	}
	out, err := exec.Command("bash", "-c", bash.stdout+"\ncomplete -p atrest").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "-F _atrest atrest") {
		t.Fatalf("the bash completion does not register: %v\n%s", err, out)
	}
	// The protocol the scripts use: atrest lists candidates itself.
	cands, err := exec.Command(bin, "--generate-bash-completion").Output()
	if err != nil || !strings.Contains(string(cands), "format") || !strings.Contains(string(cands), "rekey") {
		t.Fatalf("atrest --generate-bash-completion: %v\n%s", err, cands)
	}
	for _, shell := range []string{"zsh", "fish"} {
		if r := n.run(nil, "completion", shell); r.code != 0 || !strings.Contains(r.stdout, "atrest") {
			t.Fatalf("completion %s: %s", shell, r)
		}
	}
	man := n.run(nil, "man")
	if man.code != 0 || !strings.Contains(man.stdout, ".TH") || !strings.Contains(man.stdout, "rekey") {
		t.Fatalf("atrest man: %s", man)
	}
	// Each command with its flags and examples, the exit codes once, and
	// valid roff (man renders it without warnings).
	for _, want := range []string{`.SS "policy set`, `\-\-key-file, \-k`, "atrest open --test data1", ".SH EXIT CODES", "failed part-way"} {
		if !strings.Contains(man.stdout, want) {
			t.Errorf("atrest man lacks %q", want)
		}
	}
	if strings.Contains(man.stdout, "15  failed part-way") {
		t.Error("atrest man repeats the exit code table in every command")
	}
	if _, err := exec.LookPath("man"); err == nil {
		var stderr strings.Builder
		cmd := exec.Command("man", "--warnings", "-l", "-")
		cmd.Stdin, cmd.Stderr = strings.NewReader(man.stdout), &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man --warnings: %v\n%s", err, stderr.String())
		}
	}
	// The release build leaves urfave/cli's Markdown generator out, and
	// with it blackfriday's initialisation in every run (docs/luks2.md).
	if out, err := exec.Command("go", "version", "-m", atrestReleaseBinary(t)).Output(); err != nil || strings.Contains(string(out), "blackfriday") || strings.Contains(string(out), "go-md2man") {
		t.Errorf("the release build links go-md2man or blackfriday (%v):\n%s", err, out)
	}
	n.expect(2, []string{"unknown shell"}, "completion", "tcsh")
}
