package vm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
)

// readNewc decodes a newc archive: name → mode, content.
func readNewc(t *testing.T, b []byte) (map[string]uint32, map[string]string) {
	t.Helper()
	modes, data := map[string]uint32{}, map[string]string{}
	align := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; ; {
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic at %d: %q", off, h[:6])
		}
		fieldAt := func(i int) int {
			v, err := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		mode, size, nameSize := fieldAt(1), fieldAt(6), fieldAt(11)
		name := string(b[off+110 : off+110+nameSize-1])
		off = align(off + 110 + nameSize)
		if name == "TRAILER!!!" {
			if rest := b[off:]; len(bytes.Trim(rest, "\x00")) != 0 {
				t.Fatal("data after the trailer")
			}
			return modes, data
		}
		modes[name] = uint32(mode)
		data[name] = string(b[off : off+size])
		off = align(off + size)
	}
}

func TestArchiveIsNewc(t *testing.T) {
	var buf bytes.Buffer
	a := NewArchive(&buf)
	a.File("/etc/atrest-vm/tests", 0o644, []byte("dmcrypt -test.v\n"))
	a.Symlink("/bin/sh", "busybox")
	a.CharDev("/dev/console", 0o600, 5, 1)
	src := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(src, []byte("12345"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := a.CopyFile("/usr/sbin/prog", src); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	modes, data := readNewc(t, buf.Bytes())
	want := map[string]uint32{
		"etc": 0o40755, "etc/atrest-vm": 0o40755, "etc/atrest-vm/tests": 0o100644,
		"bin": 0o40755, "bin/sh": 0o120777, "dev": 0o40755, "dev/console": 0o20600,
		"usr": 0o40755, "usr/sbin": 0o40755, "usr/sbin/prog": 0o100755,
	}
	for n, m := range want {
		if modes[n] != m {
			t.Errorf("%s: mode %o, want %o", n, modes[n], m)
		}
	}
	if len(modes) != len(want) {
		t.Errorf("archive has %d entries, want %d: %v", len(modes), len(want), modes)
	}
	if data["etc/atrest-vm/tests"] != "dmcrypt -test.v\n" || data["bin/sh"] != "busybox" || data["usr/sbin/prog"] != "12345" {
		t.Errorf("contents: %q", data)
	}
	// cpio itself agrees (busybox's applet, as the kernel's unpacker would).
	if bb, err := exec.LookPath("busybox"); err == nil {
		cmd := exec.Command(bb, "cpio", "-t")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "usr/sbin/prog") {
			t.Fatalf("busybox cpio -t: %v\n%s", err, out)
		}
	}
}

func TestParseResultsFindsMarkersInNoise(t *testing.T) {
	raw := "\x1b[2J\x1b[01;01HATREST-VM-BOOTED 6.1.0-48-amd64\r\n" +
		"ATREST-VM-MODULE-FAILED /lib/modules/x/aesni-intel.ko\r\n" +
		"ATREST-VM-BEGIN dmcrypt\r\nline one\r\nPASS\r\nATREST-VM-END dmcrypt 0\r\n" +
		"ATREST-VM-BEGIN unlock\r\npartial output\r\n"
	r := ParseResults([]byte(raw))
	if !r.Booted || r.Kernel != "6.1.0-48-amd64" || r.Done {
		t.Fatalf("booted=%v kernel=%q done=%v", r.Booted, r.Kernel, r.Done)
	}
	if len(r.ModuleFailures) != 1 {
		t.Fatalf("module failures %v", r.ModuleFailures)
	}
	d := r.Binary("dmcrypt")
	if d == nil || !d.Ended || d.ExitCode != 0 || string(d.Output) != "line one\nPASS\n" {
		t.Fatalf("dmcrypt result %+v", d)
	}
	u := r.Binary("unlock")
	if u == nil || u.Ended || string(u.Output) != "partial output\n" {
		t.Fatalf("unlock result %+v", u)
	}
	if err := binaryVerdict("unlock", u, "", "console log: X"); err == nil || !strings.Contains(err.Error(), "console log: X") {
		t.Fatalf("an unfinished binary must fail and name the console log: %v", err)
	}
	if errs := sessionVerdicts(r, nil, "console log: X"); len(errs) != 2 {
		t.Fatalf("session verdicts %v, want the module failure and the unfinished run", errs)
	}
}

// The verdicts on real test2json output: only a test that ran and passed
// passes; a skip, a failure, a skipped subtest and a test cut off by a
// crash all fail, the last naming the console log.
func TestVerdictsOnRealTestOutput(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a test binary; not part of the unit tier (-short)")
	}
	ctx := context.Background()
	dir := t.TempDir()
	bins, err := buildTests(ctx, dir, []string{"./testdata/selfcheck"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(bins[0].Tests, " "); got != "TestPasses TestSkips TestFails TestChildSkips" {
		t.Fatalf("listed tests %q", got)
	}
	out, _ := exec.Command(bins[0].Path, "-test.v=test2json").CombinedOutput()
	raw := "ATREST-VM-BOOTED k\nATREST-VM-BEGIN selfcheck\n" + string(out) + "ATREST-VM-END selfcheck 1\nATREST-VM-DONE\n"
	res := ParseResults([]byte(raw))
	outcomes, _, err := outcomesOf(ctx, "selfcheck", res.Binary("selfcheck").Output)
	if err != nil {
		t.Fatal(err)
	}
	for name, pass := range map[string]bool{
		"TestPasses": true, "TestPasses/child": true, "TestSkips": false, "TestFails": false,
		"TestChildSkips/ok": true, "TestChildSkips/skipped": false, "TestMissing": false,
	} {
		if err := testVerdict(name, outcomes[name], "console log: X"); (err == nil) != pass {
			t.Errorf("%s: verdict %v, want pass=%v", name, err, pass)
		}
	}
	if err := binaryVerdict("selfcheck", res.Binary("selfcheck"), "", ""); err == nil {
		t.Error("exit status 1 passed")
	}

	// The guest died in the middle of TestFails: no result, no exit.
	cut := bytes.Index(out, []byte("broken"))
	res = ParseResults([]byte("ATREST-VM-BOOTED k\nATREST-VM-BEGIN selfcheck\n" + string(out[:cut])))
	outcomes, _, err = outcomesOf(ctx, "selfcheck", res.Binary("selfcheck").Output)
	if err != nil {
		t.Fatal(err)
	}
	err = testVerdict("TestFails", outcomes["TestFails"], "console log: X")
	if err == nil || !strings.Contains(err.Error(), "console log: X") {
		t.Fatalf("a test cut off by a crash: %v", err)
	}
	if len(sessionVerdicts(res, nil, "")) == 0 {
		t.Fatal("a guest that stopped early passed")
	}
}

// bootScript boots the cached kernel with a busybox initramfs whose /init
// is script, and returns the run's error, results and console log.
func bootScript(t *testing.T, script string, timeout time.Duration) (*Results, string, error) {
	t.Helper()
	testutil.RequireCommand(t, "qemu-system-x86_64", "qemu-system-x86")
	k, err := PrepareKernel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "initramfs.cpio"))
	if err != nil {
		t.Fatal(err)
	}
	a := NewArchive(f)
	a.CharDev("/dev/console", 0o600, 5, 1)
	a.File("/init", 0o755, []byte("#!/bin/busybox sh\n/bin/busybox mkdir -p /dev /proc\n/bin/busybox mount -t devtmpfs d /dev\n"+script))
	if err := a.CopyFile("/bin/busybox", BusyboxPath); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b := &Boot{Kernel: k.Image, Initrd: f.Name(), Timeout: timeout, MemoryMiB: 256, CPUs: 1,
		Console: filepath.Join(dir, "console.log"), Results: filepath.Join(dir, "results.log")}
	bootErr := b.Run(context.Background())
	data, _ := os.ReadFile(b.Results)
	return ParseResults(data), b.Console, bootErr
}

// The boot ends a minute before the test binary's -timeout (go test's
// default 10 minutes cut a 10-minute boot), and never under a minute.
func TestBootTimeoutBeforeTheTestDeadline(t *testing.T) {
	for _, c := range []struct{ want, left, got time.Duration }{
		{10 * time.Minute, 10 * time.Minute, 9 * time.Minute},
		{4 * time.Minute, 10 * time.Minute, 4 * time.Minute},
		{10 * time.Minute, 30 * time.Minute, 10 * time.Minute},
		{4 * time.Minute, 90 * time.Second, time.Minute},
	} {
		if got := bootTimeout(c.want, c.left); got != c.got {
			t.Errorf("bootTimeout(%s, %s left) = %s, want %s", c.want, c.left, got, c.got)
		}
	}
}

// A guest that hangs, or whose kernel panics, fails the run and the
// message names the console log.
func TestHungOrPanickedGuestFails(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; not part of the unit tier (-short)")
	}
	t.Run("hang", func(t *testing.T) {
		res, console, bootErr := bootScript(t, "echo ATREST-VM-BOOTED x > /dev/ttyS1\nwhile :; do /bin/busybox sleep 1; done\n", 6*time.Second)
		if !errors.Is(bootErr, ErrTimeout) {
			t.Fatalf("a hung guest: %v, want ErrTimeout", bootErr)
		}
		errs := sessionVerdicts(res, bootErr, consoleHint(console))
		if len(errs) == 0 || !strings.Contains(errs[0].Error(), console) {
			t.Fatalf("verdicts %v do not name %s", errs, console)
		}
	})
	t.Run("panic", func(t *testing.T) {
		// /init exiting panics the kernel ("Attempted to kill init").
		res, console, bootErr := bootScript(t, "echo ATREST-VM-BOOTED x > /dev/ttyS1\necho ATREST-VM-BEGIN unlock > /dev/ttyS1\nexit 1\n", 2*time.Minute)
		if bootErr != nil {
			t.Fatalf("qemu: %v", bootErr)
		}
		log, _ := os.ReadFile(console)
		if !strings.Contains(string(log), "Kernel panic") {
			t.Fatalf("no kernel panic in %s", console)
		}
		errs := sessionVerdicts(res, nil, consoleHint(console))
		if !res.Booted || len(errs) != 1 || !strings.Contains(errs[0].Error(), console) {
			t.Fatalf("verdicts %v (booted %v)", errs, res.Booted)
		}
		if err := binaryVerdict("unlock", res.Binary("unlock"), "", consoleHint(console)); err == nil {
			t.Fatal("a binary cut off by a kernel panic passed")
		}
	})
}
