// Package systemd holds atrest's systemd units and manual page
// (atrestd.service, atrest-early.service, atrestd.8); its tests check the
// units with systemd's own verifier.
package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
)

// systemd-analyze verify loads both units with the real atrestd in
// ExecStart (the verifier checks that it can be executed) and reports
// nothing: no unknown directive, no bad value, no ordering cycle among
// the units they pull in. atrest-early.service sits before
// local-fs-pre.target; with default dependencies it would also come
// after sysinit.target, itself after local-fs.target, and the verifier
// reports that cycle.
func TestUnitsVerify(t *testing.T) {
	analyze := testutil.RequireCommand(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	bin := filepath.Join(dir, "atrestd")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/atrestd").CombinedOutput(); err != nil {
		t.Fatalf("build atrestd: %v\n%s", err, out)
	}
	var units []string
	for _, u := range []string{"atrestd.service", "atrest-early.service"} {
		src, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(src), "ExecStart=/usr/local/sbin/atrestd") {
			t.Fatalf("%s does not run /usr/local/sbin/atrestd (what make install rewrites)", u)
		}
		p := filepath.Join(dir, u)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(src), "/usr/local/sbin/atrestd", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, p)
	}
	out, err := exec.Command(analyze, append([]string{"verify", "--man=no"}, units...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
