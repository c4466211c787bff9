package vm

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/swtpmtest"
)

// RunEnv narrows the guest tests to a go test -run pattern (no spaces).
const RunEnv = "ATREST_VM_RUN"

// DefaultModules are loaded in every guest: loop devices, dm-crypt with
// accelerated AES-XTS, the kernel crypto API for cryptsetup's keyslots,
// and ext4.
var DefaultModules = []string{
	"loop", "dm-mod", "dm-crypt", "ecb", "xts", "cryptd", "crypto_simd", "aesni-intel",
	"af_alg", "algif_skcipher",
	"crc32c_generic", "crc32c-intel", "crc16", "mbcache", "jbd2", "ext4",
}

// DefaultTimeout bounds one boot, build time not included.
const DefaultTimeout = 4 * time.Minute

// deadlineMargin is what a boot leaves of the test binary's -timeout, for
// the kernel, the build and the verdicts.
const deadlineMargin = time.Minute

// bootTimeout is want, cut so that the boot ends (QEMU killed, the
// verdict reported) a margin before the test binary's own -timeout, left
// is the time until it: go test's default 10 minutes would otherwise
// panic first over a boot of 10 minutes, with no verdict. It never goes
// below a minute, so a -timeout too short for any boot still boots.
func bootTimeout(want, left time.Duration) time.Duration {
	return max(min(want, left-deadlineMargin), time.Minute)
}

//go:embed init.sh
var initScript []byte

// Spec is what a host test runs in one guest boot.
type Spec struct {
	// Packages are import paths whose tests run in the guest, one binary
	// each; every test they list must run and pass there.
	Packages []string
	// Programs are host programs copied in with their libraries
	// (DefaultPrograms when nil).
	Programs []string
	// Modules are kernel modules to load (DefaultModules when nil).
	Modules []string
	// Files are extra host files to put in the guest: guest path → host path.
	Files map[string]string
	// Timeout bounds the boot (DefaultTimeout when zero).
	Timeout time.Duration
	// MemoryMiB sizes the guest (1536 when zero).
	MemoryMiB int
	// TPM gives the guest a TPM 2.0 (swtpm behind QEMU's tpm-tis) and
	// the libraries of systemd's cryptsetup token plugin (TPMLibraries).
	TPM bool
}

// Run builds the guest for spec, boots it and reports every guest test as
// a subtest of t: t/<binary>/<test>. A guest test that failed or skipped,
// a test that never reported, a binary that did not exit 0, a guest that
// panicked or timed out: each fails t, naming the console log.
//
// The VM tier is not part of the unit tier: under -short it skips.
// Missing host tools skip, or fail in strict mode (make test).
func Run(t *testing.T, spec Spec) {
	t.Helper()
	if testing.Short() {
		t.Skip("real-kernel VM tier; not part of the unit tier (-short)")
	}
	testutil.RequireCommand(t, "qemu-system-x86_64", "qemu-system-x86")
	testutil.RequireCommand(t, "apt-get", "apt")
	testutil.RequireCommand(t, "dpkg", "dpkg")
	testutil.RequireCommand(t, "modprobe", "kmod")
	testutil.RequireCommand(t, "depmod", "kmod")
	if static, err := isStatic(BusyboxPath); err != nil || !static {
		testutil.Missing(t, BusyboxPath+" is missing or not static; install the Debian package busybox-static")
	}
	pattern := os.Getenv(RunEnv)
	if strings.ContainsAny(pattern, " \t\n") {
		t.Fatalf("%s=%q: the pattern may not contain spaces", RunEnv, pattern)
	}
	if spec.Timeout == 0 {
		spec.Timeout = DefaultTimeout
	}
	if d, ok := t.Deadline(); ok {
		spec.Timeout = bootTimeout(spec.Timeout, time.Until(d))
	}
	ctx := context.Background()

	logDir, err := logDir(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	k, err := PrepareKernel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest kernel %s ready in %s", k.Release, time.Since(start).Round(time.Millisecond))

	work := t.TempDir()
	start = time.Now()
	bins, err := buildTests(ctx, work, spec.Packages, pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("test binaries built in %s", time.Since(start).Round(time.Millisecond))

	initrd := filepath.Join(work, "initramfs.cpio")
	if err := buildInitramfs(ctx, initrd, k, &spec, bins, pattern); err != nil {
		t.Fatal(err)
	}
	boot := &Boot{
		Kernel: k.Image, Initrd: initrd, MemoryMiB: spec.MemoryMiB, Timeout: spec.Timeout,
		Console: filepath.Join(logDir, "console.log"), Results: filepath.Join(logDir, "results.log"),
	}
	if spec.TPM {
		boot.TPMSocket = swtpmtest.StartQEMU(t, work).Socket
	}
	t.Logf("booting; console log: %s", boot.Console)
	start = time.Now()
	bootErr := boot.Run(ctx)
	t.Logf("guest ran for %s", time.Since(start).Round(time.Millisecond))
	data, err := os.ReadFile(boot.Results)
	if err != nil && bootErr == nil {
		bootErr = err
	}
	report(t, ctx, ParseResults(data), bins, bootErr, boot.Console)
}

// logDir returns a fresh directory for the logs of the named host test.
func logDir(testName string) (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	safe := regexp.MustCompile(`[^A-Za-z0-9._-]+`).ReplaceAllString(testName, "_")
	dir := filepath.Join(cache, "logs", safe)
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("vm: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("vm: %w", err)
	}
	return dir, nil
}

// buildInitramfs writes the guest's initramfs: busybox, /init, the
// modules, the host programs with their libraries, the test binaries and
// their testdata, and the lists /init reads.
func buildInitramfs(ctx context.Context, out string, k *Kernel, spec *Spec, bins []testBinary, pattern string) error {
	modules := spec.Modules
	if modules == nil {
		modules = DefaultModules
	}
	programs := spec.Programs
	if programs == nil {
		programs = DefaultPrograms
	}
	mods, err := k.Modules(ctx, modules...)
	if err != nil {
		return err
	}
	files, err := programFiles(ctx, programs)
	if err != nil {
		return err
	}
	if spec.TPM {
		libs, err := libraryFiles(ctx, TPMLibraries)
		if err != nil {
			return err
		}
		for g, h := range libs {
			files[g] = h
		}
	}
	for g, h := range spec.Files {
		files[g] = h
	}
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	defer f.Close()
	a := NewArchive(f)
	for _, d := range []string{"/dev", "/proc", "/sys", "/tmp", "/run", "/mnt", "/root", "/work", "/usr/bin", "/usr/sbin", "/sbin"} {
		a.Dir(d, 0o755)
	}
	a.CharDev("/dev/console", 0o600, 5, 1)
	a.File("/init", 0o755, initScript)
	if err := a.CopyFile("/bin/busybox", BusyboxPath); err != nil {
		return err
	}
	if err := k.ArchiveModules(a, mods, "/etc/atrest-vm/modules"); err != nil {
		return err
	}
	for g, h := range files {
		if err := a.CopyFile(g, h); err != nil {
			return err
		}
	}
	var tests strings.Builder
	for _, b := range bins {
		if err := a.CopyFile("/tests/"+b.Name+".test", b.Path); err != nil {
			return err
		}
		if b.Testdata != "" {
			if err := addTree(a, "/work/"+b.Name+"/testdata", b.Testdata); err != nil {
				return err
			}
		}
		args := []string{"-test.v=test2json", "-test.timeout=" + (spec.Timeout - 20*time.Second).String()}
		if pattern != "" {
			args = append(args, "-test.run="+pattern)
		}
		fmt.Fprintf(&tests, "%s %s\n", b.Name, strings.Join(args, " "))
	}
	a.File("/etc/atrest-vm/tests", 0o644, []byte(tests.String()))
	if err := a.Close(); err != nil {
		return err
	}
	return f.Close()
}

// addTree copies the host directory src into the archive at dst.
func addTree(a *Archive, dst, src string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		g := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			a.Dir(g, 0o755)
		case d.Type().IsRegular():
			return a.CopyFile(g, p)
		}
		return nil
	})
}
