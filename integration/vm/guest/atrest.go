package guest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
)

// AtrestBinary is where the guest image installs atrest.
const AtrestBinary = "/usr/bin/atrest"

// Atrest is an atrest configuration for one guest test: the local
// keystore and the state directory in the test's own directory.
type Atrest struct {
	Dir    string // the test's directory: kek, state/, atrest.yaml
	Config string // the configuration file, passed as -c
}

// NewAtrest writes a configuration with the local keystore and recovery
// mode recovery (print, none, ...). Without device-mapper (the host, not
// the guest) or without the atrest binary the test skips, or fails in
// strict mode.
func NewAtrest(t testing.TB, recovery string) *Atrest {
	t.Helper()
	testutil.RequireDeviceMapper(t)
	if _, err := os.Stat(AtrestBinary); err != nil {
		testutil.Missing(t, "no atrest binary at "+AtrestBinary)
	}
	dir := t.TempDir()
	a := &Atrest{Dir: dir, Config: filepath.Join(dir, "atrest.yaml")}
	doc := fmt.Sprintf("kms: local\nlocal:\n  keystore: %s/kek\nstate_dir: %s/state\nrecovery:\n  mode: %s\n", dir, dir, recovery)
	if err := os.WriteFile(a.Config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return a
}

// AddConfig appends doc (top-level YAML keys) to the configuration.
func (a *Atrest) AddConfig(t testing.TB, doc string) {
	t.Helper()
	f, err := os.OpenFile(a.Config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(doc); err != nil {
		t.Fatal(err)
	}
}

// Args is args after -c and the configuration.
func (a *Atrest) Args(args ...string) []string {
	return append([]string{"-c", a.Config}, args...)
}
