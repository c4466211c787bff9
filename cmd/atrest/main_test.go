package main

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/memscan"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// atrestBinary builds this command once per test run.
func atrestBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "atrest-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "atrest")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("%s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build atrest: %v", buildErr)
	}
	return binPath
}

// scanRun runs atrest with args and, when it is about to exit, counts the
// copies of each secret in its memory (secrets is called then, so it may
// read files the command wrote). It also checks that the process could not
// have dumped core.
func scanRun(t *testing.T, env []string, secrets func() [][]byte, args ...string) []memscan.Counts {
	t.Helper()
	r := scanRunFull(t, env, secrets, args...)
	return r.counts
}

// scanResult is what scanRunFull saw of one run.
type scanResult struct {
	counts  []memscan.Counts
	environ []byte // /proc/PID/environ just before exit
	output  []byte // stdout and stderr
}

func scanRunFull(t *testing.T, env []string, secrets func() [][]byte, args ...string) scanResult {
	t.Helper()
	testutil.RequireRoot(t) // reading another process's memory
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(atrestBinary(t), args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	var r scanResult
	var soft, hard string
	status, err := memscan.AtExit(cmd, func(pid int) {
		soft, hard, _ = memscan.CoreLimit(pid)
		r.environ, _ = os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		var serr error
		if r.counts, serr = memscan.Scan(pid, secrets()...); serr != nil {
			t.Error(serr)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	r.output, _ = os.ReadFile(out.Name())
	if status != 0 {
		t.Fatalf("atrest %s: exit %d\n%s", strings.Join(args, " "), status, r.output)
	}
	if soft != "0" || hard != "0" {
		t.Errorf("atrest may dump core: RLIMIT_CORE %s/%s, want 0/0", soft, hard)
	}
	return r
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "atrest.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// kekVersions returns every key in a local keystore file.
func kekVersions(t *testing.T, path string) [][]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const header, record = 8 + 16 + 4, 4 + 32
	n := int(binary.BigEndian.Uint32(b[24:]))
	var keys [][]byte
	for i := range n {
		keys = append(keys, b[header+i*record+4:header+(i+1)*record])
	}
	return keys
}

func report(t *testing.T, what string, counts []memscan.Counts, allowed int) {
	t.Helper()
	for i, c := range counts {
		t.Logf("%s %d: %d copies in ordinary memory, %d in locked memory", what, i+1, c.Plain, c.Protected)
		for j := range c.Where {
			t.Logf("  in %s after %s", c.Where[j], c.Before[j])
		}
		if c.Plain > allowed {
			t.Errorf("%s %d: %d copies in core-dumpable memory, at most %d expected", what, i+1, c.Plain, allowed)
		}
	}
}

// TestLocalKEKNotInDumpableMemory: after `kms rotate` and `kms check`
// (read, extend and rewrite the keystore; wrap and unwrap a probe), and
// after format and rekey of a volume on an image file, the KEK versions
// are in locked memory only.
func TestLocalKEKNotInDumpableMemory(t *testing.T) {
	dir := t.TempDir()
	ks := filepath.Join(dir, "kek")
	cfg := writeConfig(t, "kms: local\nlocal:\n  keystore: "+ks+"\n")
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	keys := func() [][]byte { return kekVersions(t, ks) }
	report(t, "KEK after rotate, version", scanRun(t, env, keys, "-c", cfg, "kms", "rotate"), 0)
	report(t, "KEK after check, version", scanRun(t, env, keys, "-c", cfg, "kms", "check"), 0)
	// A volume on an image file: format wraps a platform secret, rekey
	// unwraps the old one and wraps a new one.
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	report(t, "KEK after format, version", scanRun(t, env, keys, "-c", cfg, "format", img, "--name", "memscan", "--recovery", "none"), 0)
	report(t, "KEK after rekey, version", scanRun(t, env, keys, "-c", cfg, "rekey", img), 0)
}
