package boot

import (
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/integration/vm"
)

// BuildProgram builds the Go main package pkg (an import path, or a
// directory relative to the calling test's package such as
// "./testdata/probe") as a static linux/amd64 binary for the guest
// (CGO_ENABLED=0), with the tags of `make build` (urfave_cli_no_docs:
// the guest runs what ships), and returns its host path.
func BuildProgram(t testing.TB, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), path.Base(strings.TrimSuffix(pkg, "/")))
	cmd := exec.CommandContext(context.Background(), vm.GoTool(), "build", "-trimpath", "-tags", "urfave_cli_no_docs", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("boot: go build %s: %v\n%s", pkg, err, b)
	}
	return out
}
