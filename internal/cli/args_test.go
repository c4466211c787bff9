package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestInterspersedFlags(t *testing.T) {
	app := newApp(&env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}})
	for _, tc := range []struct{ in, want string }{
		// Flags after the positional argument move before it.
		{"atrest format /dev/sdb --name data1", "atrest format --name data1 /dev/sdb"},
		// A global option after the command goes back to the global level.
		{"atrest format /dev/sdb --name data1 -o json", "atrest -o json format --name data1 /dev/sdb"},
		{"atrest format /dev/sdb --name=data1 --force", "atrest format --name=data1 --force /dev/sdb"},
		// Subcommands keep their own flags.
		{"atrest recovery unlock data1 --key-file - --read-only", "atrest recovery unlock --key-file - --read-only data1"},
		{"atrest -c /etc/x.yaml status data1 --long", "atrest -c /etc/x.yaml status --long data1"},
		// "--" ends flag handling: what follows stays positional.
		{"atrest open -- --weird-name", "atrest open -- --weird-name"},
		// A command word after a positional argument is an argument.
		{"atrest open status", "atrest open status"},
		// Completion requests stay last, where urfave/cli looks for them.
		{"atrest format --generate-bash-completion", "atrest format --generate-bash-completion"},
	} {
		got := strings.Join(interspersed(app, strings.Fields(tc.in)), " ")
		if got != tc.want {
			t.Errorf("%q\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

// Flags after arguments reach the command: the invocation every example in
// the docs uses works end to end.
func TestFormatFlagsAfterDevice(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := Main([]string{"atrest", "-c", "/nonexistent/atrest.yaml", "format", "/dev/null", "--name", "x", "--sector-size", "1000"}, strings.NewReader(""), &stdout, &stderr)
	if code != ExitUsage || !strings.Contains(stderr.String(), "sector size 1000 not supported") {
		t.Fatalf("exit %d, stderr %q: the flags after the device were not parsed", code, stderr.String())
	}
}
