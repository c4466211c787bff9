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
	n.expect(2, []string{"unknown shell"}, "completion", "tcsh")
}
