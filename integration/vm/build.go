package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// testBinary is one package's test binary, built for the guest.
type testBinary struct {
	// Name is the guest-side name: the package path's last element.
	Name string
	// Package is the import path.
	Package string
	// Path is the binary on the host.
	Path string
	// Testdata is the package's testdata directory on the host, if any.
	Testdata string
	// Tests are the top-level tests the run must report as passed.
	Tests []string
}

// goTool returns the go command that runs this test, preferring the one in
// GOROOT so the binaries match the toolchain.
func goTool() string {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if p := filepath.Join(strings.TrimSpace(string(out)), "bin", "go"); fileExists(p) {
			return p
		}
	}
	return "go"
}

// buildTests compiles the test binaries of pkgs (import paths) into dir as
// static executables and lists the tests each will run under pattern.
func buildTests(ctx context.Context, dir string, pkgs []string, pattern string) ([]testBinary, error) {
	gobin := goTool()
	var bins []testBinary
	names := map[string]string{}
	for _, pkg := range pkgs {
		name := path.Base(pkg)
		if prev, dup := names[name]; dup {
			return nil, fmt.Errorf("vm: packages %s and %s share the name %s; run them in separate boots", prev, pkg, name)
		}
		names[name] = pkg
		bins = append(bins, testBinary{Name: name, Package: pkg, Path: filepath.Join(dir, name+".test")})
	}
	// atrest_guest leaves out test files for the host tier only
	// (//go:build !atrest_guest): a guest has no Vault server, for one.
	args := append([]string{"test", "-c", "-tags", "atrest_guest", "-o", dir + "/"}, pkgs...)
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vm: go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	for i := range bins {
		b := &bins[i]
		if !fileExists(b.Path) {
			return nil, fmt.Errorf("vm: package %s has no test files; nothing would run in the guest", b.Package)
		}
		dir, err := packageDir(ctx, gobin, b.Package)
		if err != nil {
			return nil, err
		}
		if st, err := os.Stat(filepath.Join(dir, "testdata")); err == nil && st.IsDir() {
			b.Testdata = filepath.Join(dir, "testdata")
		}
		if b.Tests, err = listTests(ctx, b.Path, dir, pattern); err != nil {
			return nil, err
		}
		if len(b.Tests) == 0 {
			return nil, fmt.Errorf("vm: no test of %s matches %q", b.Package, pattern)
		}
	}
	return bins, nil
}

func packageDir(ctx context.Context, gobin, pkg string) (string, error) {
	out, err := exec.CommandContext(ctx, gobin, "list", "-f", "{{.Dir}}", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("vm: go list %s: %w", pkg, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// listTests asks the binary itself (it runs on the host too) which
// top-level tests match the first element of pattern.
func listTests(ctx context.Context, bin, dir, pattern string) ([]string, error) {
	top := "."
	if pattern != "" {
		top, _, _ = strings.Cut(pattern, "/")
	}
	cmd := exec.CommandContext(ctx, bin, "-test.list", top)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("vm: %s -test.list: %w", filepath.Base(bin), err)
	}
	var tests []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Test") {
			tests = append(tests, strings.TrimSpace(l))
		}
	}
	return tests, nil
}

// testEvent is one line of go tool test2json output.
type testEvent struct {
	Action string
	Test   string
	Output string
}

// decodeTestOutput turns `-test.v=test2json` output into test2json events.
func decodeTestOutput(ctx context.Context, name string, out []byte) ([]testEvent, error) {
	cmd := exec.CommandContext(ctx, goTool(), "tool", "test2json", "-p", name)
	cmd.Stdin = bytes.NewReader(out)
	js, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("vm: go tool test2json: %w", err)
	}
	var evs []testEvent
	dec := json.NewDecoder(bytes.NewReader(js))
	for dec.More() {
		var e testEvent
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("vm: decode test2json output: %w", err)
		}
		evs = append(evs, e)
	}
	return evs, nil
}
