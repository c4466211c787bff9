package vm

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
)

// outcome is what test2json said about one guest test.
type outcome struct {
	action string // pass, fail, skip or "" (never finished)
	output strings.Builder
}

// report turns the guest's results into subtests of t. Only a test that
// ran and passed in the guest passes on the host.
func report(t *testing.T, ctx context.Context, res *Results, bins []testBinary, bootErr error, console string) {
	t.Helper()
	where := consoleHint(console)
	for _, err := range sessionVerdicts(res, bootErr, where) {
		t.Error(err)
	}
	for _, b := range bins {
		t.Run(b.Name, func(t *testing.T) {
			br := res.Binary(b.Name)
			if br == nil {
				t.Fatalf("%s never started in the guest\n%s", b.Package, where)
			}
			outcomes, pkgOut, err := outcomesOf(ctx, b.Name, br.Output)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range b.Tests {
				t.Run(name, func(t *testing.T) { reportTest(t, name, outcomes, where) })
			}
			if err := binaryVerdict(b.Package, br, pkgOut, where); err != nil {
				t.Error(err)
			}
		})
	}
}

// sessionVerdicts lists what went wrong with the boot as a whole.
func sessionVerdicts(res *Results, bootErr error, where string) []error {
	var errs []error
	if bootErr != nil {
		errs = append(errs, fmt.Errorf("the guest did not finish: %w\n%s", bootErr, where))
	}
	if !res.Booted {
		errs = append(errs, fmt.Errorf("the guest never reached /init (kernel or initramfs problem)\n%s", where))
	}
	for _, m := range res.ModuleFailures {
		errs = append(errs, fmt.Errorf("the guest could not load kernel module %s\n%s", m, where))
	}
	if bootErr == nil && res.Booted && !res.Done {
		errs = append(errs, fmt.Errorf("the guest stopped before running every test binary\n%s", where))
	}
	return errs
}

// binaryVerdict checks that a test binary exited, and with status 0.
func binaryVerdict(pkg string, br *BinaryResult, pkgOut, where string) error {
	switch {
	case !br.Ended:
		return fmt.Errorf("%s did not exit: the guest panicked, crashed or timed out\n%s\n%s", pkg, pkgOut, where)
	case br.ExitCode != 0:
		return fmt.Errorf("%s exited with status %d in the guest\n%s", pkg, br.ExitCode, pkgOut)
	}
	return nil
}

// testVerdict is nil only for a test that ran and passed.
func testVerdict(name string, o *outcome, where string) error {
	switch {
	case o == nil:
		return fmt.Errorf("%s never ran in the guest\n%s", name, where)
	case o.action == "pass":
		return nil
	case o.action == "fail":
		return fmt.Errorf("%s failed in the guest:\n%s", name, o.output.String())
	case o.action == "skip":
		return fmt.Errorf("%s skipped in the guest; in the VM tier a skip is a failure:\n%s", name, o.output.String())
	}
	return fmt.Errorf("%s has no result from the guest (panic, crash or timeout):\n%s\n%s", name, o.output.String(), where)
}

// outcomesOf decodes a binary's output into per-test outcomes and the
// output that belongs to no test.
func outcomesOf(ctx context.Context, name string, out []byte) (map[string]*outcome, string, error) {
	evs, err := decodeTestOutput(ctx, name, out)
	if err != nil {
		return nil, "", err
	}
	m := map[string]*outcome{}
	var pkgOut strings.Builder
	for _, e := range evs {
		if e.Test == "" {
			pkgOut.WriteString(e.Output)
			continue
		}
		o := m[e.Test]
		if o == nil {
			o = &outcome{}
			m[e.Test] = o
		}
		switch e.Action {
		case "pass", "fail", "skip":
			o.action = e.Action
		case "output":
			o.output.WriteString(e.Output)
		}
	}
	return m, pkgOut.String(), nil
}

// reportTest mirrors guest test name, and its subtests, on t.
func reportTest(t *testing.T, name string, outcomes map[string]*outcome, where string) {
	t.Helper()
	o := outcomes[name]
	if err := testVerdict(name, o, where); err != nil {
		t.Error(err)
		if o == nil {
			return
		}
	} else if testing.Verbose() {
		t.Log("guest output:\n" + o.output.String())
	}
	var children []string
	for n := range outcomes {
		if rest, ok := strings.CutPrefix(n, name+"/"); ok && !strings.Contains(rest, "/") {
			children = append(children, n)
		}
	}
	sort.Strings(children)
	for _, c := range children {
		t.Run(strings.TrimPrefix(c, name+"/"), func(t *testing.T) { reportTest(t, c, outcomes, where) })
	}
}

// consoleHint names the console log and quotes its last lines.
func consoleHint(console string) string {
	const tail = 40
	b, err := os.ReadFile(console)
	if err != nil {
		return fmt.Sprintf("console log: %s (unreadable: %v)", console, err)
	}
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(string(b), "\r", ""), "\n"), "\n")
	if len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	return fmt.Sprintf("console log: %s; its last lines:\n%s", console, strings.Join(lines, "\n"))
}
