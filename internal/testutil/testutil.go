// Package testutil gates tests on what they need from the machine (root,
// loop devices, external commands) so that a tier that cannot run is visible.
//
// Outside strict mode a missing requirement skips the test with the reason.
// In strict mode (ATREST_TEST_STRICT=1, which `make test` and CI set) it
// fails the test instead: a skipped tier is not a passed tier. `go test
// -short` always skips, which is how the unit tier runs without root.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// Strict reports whether missing requirements fail tests instead of
// skipping them.
func Strict() bool { return os.Getenv("ATREST_TEST_STRICT") == "1" }

// Missing skips or fails t because of an unmet requirement.
func Missing(t testing.TB, reason string) {
	t.Helper()
	if Strict() {
		t.Fatalf("requirement not met in strict mode (make test): %s", reason)
	}
	t.Skip(reason)
}

// RequireRoot gates a test that needs root and loop devices. The unit tier
// (go test -short) skips it.
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root and loop devices; not part of the unit tier (-short)")
	}
	if os.Geteuid() != 0 {
		Missing(t, "needs root for loop devices; run `sudo make integration` or `make test` as root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		Missing(t, "this kernel has no /dev/loop-control")
	}
}

// RequireCommand gates a test on an external program and returns its path.
func RequireCommand(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, name+" not found; install the Debian package "+pkg+" (.ci/run does)")
	}
	return p
}
