// Package debtest builds atrest's Debian package for tests, exactly as
// `make deb` does (packaging/deb/build.sh), into a test's own directory.
package debtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// Build gates t on the tools the build needs, runs packaging/deb/build.sh
// on the repository with env added to the environment (DEB_VERSION=...
// builds another version of the same tree) and returns the .deb's path.
// It never writes into the repository.
func Build(t testing.TB, env ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the Debian package; not part of the unit tier (-short)")
	}
	for cmd, pkg := range map[string]string{"dpkg-deb": "dpkg", "make": "make", "git": "git", "gzip": "gzip"} {
		testutil.RequireCommand(t, cmd, pkg)
	}
	root, err := vaulttest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(root, "packaging", "deb", "build.sh"), out)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("packaging/deb/build.sh: %v\n%s", err, stderr.Bytes())
	}
	deb := strings.TrimSpace(string(stdout))
	if filepath.Dir(deb) != out || !strings.HasSuffix(deb, ".deb") {
		t.Fatalf("packaging/deb/build.sh printed %q, want a .deb in %s", deb, out)
	}
	return deb
}
