// Package vaulttest runs a real HashiCorp Vault server for tests: the
// program in integration/vaultserver (Vault's own in-process test cluster,
// its own Go module so Vault's ~800 modules stay out of atrest's go.mod).
//
// Binary finds or builds that program: ATREST_VAULTSERVER names a built
// binary (the Makefile builds bin/vaultserver once and sets it); otherwise
// it runs `go build` into bin/vaultserver under a file lock, which costs
// about 8 minutes and 3.4 GB of memory on a cold build cache and a couple
// of seconds after that. Start runs a server for one test; Shared runs one
// per test binary (with Main in TestMain) for tests that do not disturb it.
// Provision sets a server up the way docs/vault.md tells operators to.
//
// Under -short every Vault test skips: the unit tier needs no Vault.
package vaulttest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
	"golang.org/x/sys/unix"
)

// EnvBinary names a prebuilt vaultserver binary.
const EnvBinary = "ATREST_VAULTSERVER"

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary returns the path of the vaultserver program, building it if
// needed. In -short mode the test is skipped; when the program cannot be
// built the test is skipped, or fails in strict mode.
func Binary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real Vault server; not part of the unit tier (-short)")
	}
	buildOnce.Do(func() { buildPath, buildErr = binary() })
	if buildErr != nil {
		testutil.Missing(t, "cannot provide the test Vault server: "+buildErr.Error())
	}
	return buildPath
}

func binary() (string, error) {
	out := os.Getenv(EnvBinary)
	if out != "" {
		if _, err := os.Stat(out); err == nil {
			return out, nil
		}
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	if out == "" {
		out = filepath.Join(root, "bin", "vaultserver")
	}
	return Build(root, out)
}

// RepoRoot is the directory of atrest's main go.mod, found from the
// working directory upwards.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/atrest/atrest\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no atrest go.mod above the working directory")
		}
		dir = parent
	}
}

// Build builds root's integration/vaultserver into out (static,
// CGO_ENABLED=0) and returns out. Concurrent test binaries serialise on a
// lock file beside out; Go's build cache makes a rebuild with nothing
// changed cheap.
func Build(root, out string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(out+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", err
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("building the test Vault needs the go command: %w", err)
	}
	start := time.Now()
	cmd := exec.Command(goCmd, "build", "-trimpath", "-o", out, ".")
	cmd.Dir = filepath.Join(root, "integration", "vaultserver")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	fmt.Fprintf(os.Stderr, "vaulttest: building %s (a cold build takes about 8 minutes)\n", out)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build integration/vaultserver: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	fmt.Fprintf(os.Stderr, "vaulttest: built %s in %s\n", out, time.Since(start).Round(time.Second))
	return out, nil
}
