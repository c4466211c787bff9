package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
)

// runtimeTB satisfies testing.TB outside a test binary, which is what
// vault.NewTestCluster asks for. A failure inside Vault's cluster setup is
// fatal for this program: it prints the reason and exits non-zero, so the
// test that started it sees a clear error instead of a hang.
//
// Embedding the (nil) interface provides testing.TB's unexported method;
// every exported method is implemented below, so the nil is never called.
type runtimeTB struct {
	testing.TB

	log io.Writer
	dir string

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	tmpN     int
}

func newRuntimeTB(dir string, log io.Writer) *runtimeTB {
	return &runtimeTB{dir: dir, log: log}
}

// runCleanups runs the registered cleanups, last registered first.
func (t *runtimeTB) runCleanups() {
	t.mu.Lock()
	fs := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func (t *runtimeTB) fatal(msg string) {
	fmt.Fprintln(os.Stderr, "vaultserver: fatal:", msg)
	t.runCleanups()
	os.Exit(1)
}

func (t *runtimeTB) ArtifactDir() string      { return t.dir }
func (t *runtimeTB) Attr(_, _ string)         {}
func (t *runtimeTB) Chdir(string)             { t.fatal("Chdir is not supported") }
func (t *runtimeTB) Context() context.Context { return context.Background() }
func (t *runtimeTB) Error(args ...any)        { t.Log(args...); t.Fail() }
func (t *runtimeTB) Errorf(f string, a ...any) {
	t.Logf(f, a...)
	t.Fail()
}
func (t *runtimeTB) Fail() {
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
}
func (t *runtimeTB) FailNow()                  { t.fatal("test cluster failed") }
func (t *runtimeTB) Failed() bool              { t.mu.Lock(); defer t.mu.Unlock(); return t.failed }
func (t *runtimeTB) Fatal(args ...any)         { t.fatal(fmt.Sprint(args...)) }
func (t *runtimeTB) Fatalf(f string, a ...any) { t.fatal(fmt.Sprintf(f, a...)) }
func (t *runtimeTB) Helper()                   {}
func (t *runtimeTB) Log(args ...any)           { fmt.Fprintln(t.log, args...) }
func (t *runtimeTB) Logf(f string, a ...any)   { fmt.Fprintf(t.log, f+"\n", a...) }
func (t *runtimeTB) Name() string              { return "atrest-vaultserver" }
func (t *runtimeTB) Output() io.Writer         { return t.log }
func (t *runtimeTB) Setenv(k, v string)        { _ = os.Setenv(k, v) }
func (t *runtimeTB) Skip(args ...any)          { t.fatal("skip: " + fmt.Sprint(args...)) }
func (t *runtimeTB) SkipNow()                  { t.fatal("skip") }
func (t *runtimeTB) Skipf(f string, a ...any)  { t.fatal("skip: " + fmt.Sprintf(f, a...)) }
func (t *runtimeTB) Skipped() bool             { return false }

func (t *runtimeTB) Cleanup(f func()) {
	t.mu.Lock()
	t.cleanups = append(t.cleanups, f)
	t.mu.Unlock()
}

func (t *runtimeTB) TempDir() string {
	t.mu.Lock()
	t.tmpN++
	n := t.tmpN
	t.mu.Unlock()
	d, err := os.MkdirTemp(t.dir, fmt.Sprintf("tmp%d-", n))
	if err != nil {
		t.fatal(err.Error())
	}
	return d
}
