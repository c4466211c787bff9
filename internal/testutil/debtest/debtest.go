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
// on the working tree with env added to the environment (DEB_VERSION=...
// builds another version of the same tree) and returns the .deb's path.
// It never writes into the repository.
func Build(t testing.TB, env ...string) string {
	t.Helper()
	return build(t, repoRoot(t), env)
}

// BuildPrevious builds the package of the commit before the working tree
// (HEAD~1, or HEAD when the tree has uncommitted changes), from a clone,
// so that a test can upgrade from it. A commit from before packaging/deb
// existed cannot be built: then the working tree is built with its
// version lowered (VERSION~prev, which dpkg sorts just before VERSION),
// and how says which of the two it is.
func BuildPrevious(t testing.TB) (deb, how string) {
	t.Helper()
	root := repoRoot(t)
	git := func(dir string, args ...string) string {
		out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	rev := "HEAD~1"
	if git(root, "status", "--porcelain", "--untracked-files=no") != "" {
		rev = "HEAD"
	}
	commit := git(root, "rev-parse", "--short", rev)
	if exec.Command("git", "-C", root, "cat-file", "-e", commit+":packaging/deb/build.sh").Run() != nil {
		out, err := exec.Command(filepath.Join(root, "packaging", "deb", "version.sh")).Output()
		if err != nil {
			t.Fatalf("packaging/deb/version.sh: %v", err)
		}
		v := strings.TrimSpace(string(out)) + "~prev"
		return Build(t, "DEB_VERSION="+v), "the working tree as " + v + " (" + commit + " has no packaging/deb)"
	}
	clone := filepath.Join(t.TempDir(), "atrest")
	git(root, "clone", "-q", "--shared", "--no-checkout", root, clone)
	git(clone, "checkout", "-q", commit)
	return build(t, clone, nil), "commit " + commit
}

func repoRoot(t testing.TB) string {
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
	return root
}

func build(t testing.TB, root string, env []string) string {
	t.Helper()
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

// Version is the Version field of the package at deb.
func Version(t testing.TB, deb string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "-f", deb, "Version").Output()
	if err != nil {
		t.Fatalf("dpkg-deb -f %s Version: %v", deb, err)
	}
	return strings.TrimSpace(string(out))
}
