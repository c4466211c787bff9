package cli

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// BenchmarkUnlockProcess compares whole-process cold unlocks of one
// volume, neither mapping anything, each iteration running both so that
// load from elsewhere falls on both alike:
//
//   - atrest: `atrest open --test VOLUME` of a volume formatted through
//     the binary with Vault Transit: process start, configuration, the
//     header scan, TLS to Vault on loopback, AppRole login, the unwrap and
//     the PBKDF2-SHA512/1000 keyslot (a new process every time, so a cold
//     client, TLS handshake and login);
//   - clevis: `clevis luks pass -d IMAGE -s SLOT | cryptsetup open
//     --test-passphrase --key-slot SLOT --key-file - IMAGE`, the keyslot
//     `clevis luks bind` made (PBKDF2, 1000 iterations) and tang on
//     127.0.0.1 (socat forking tangd per connection).
//
// The two run in pairs, their order alternating from pair to pair. It
// reports the median wall time of each (atrest-ms/median,
// clevis-ms/median), the median CPU time (user and system, the
// clevis pipeline's processes included; neither Vault's nor tang's) of
// each (atrest-cpu-ms/median, clevis-cpu-ms/median), the median of the
// pairs' ratios clevis/atrest (ratio; a pair shares the machine's load,
// so its ratio is steadier than the ratio of the medians) with its
// quartiles (ratio-p25, ratio-p75), and the 1-minute load average at the
// end (load1): other work on the machine stretches both, and a loaded
// machine stretches the shorter run more. scripts/bench-all.sh prints
// them.
func BenchmarkUnlockProcess(b *testing.B) {
	testutil.RequireRoot(b)
	for _, c := range []string{"clevis", "cryptsetup", "socat", "/usr/libexec/tangd"} {
		if _, err := exec.LookPath(c); err != nil {
			b.Skipf("%s missing (make deps installs clevis, clevis-luks, tang and socat)", c)
		}
	}
	srv := vaulttest.Shared(b)
	n := benchNode(b, srv)
	bin := atrestReleaseBinary(b)
	dev := benchDisk(b)
	if out, err := exec.Command(bin, "-c", n.config, "format", dev, "--name", "ulk", "--force").CombinedOutput(); err != nil {
		b.Fatalf("format: %v\n%s", err, out)
	}
	img, slot := clevisVolume(b, tangServer(b))

	atrest := exec.Command(bin, "-c", n.config, "open", "--test", dev)
	clevis := exec.Command("sh", "-c", fmt.Sprintf("clevis luks pass -d %s -s %s | cryptsetup open --test-passphrase --key-slot %s --key-file - %s", img, slot, slot, img))
	run := func(cmd *exec.Cmd) (wall, cpu time.Duration) {
		c := exec.Command(cmd.Args[0], cmd.Args[1:]...)
		start := time.Now()
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", c.Args, err, out)
		}
		wall = time.Since(start)
		return wall, c.ProcessState.UserTime() + c.ProcessState.SystemTime()
	}
	var at, ct, acpu, ccpu []time.Duration
	var ratios []float64
	b.ResetTimer()
	for i := range b.N {
		var aw, ac, cw, cc time.Duration
		if i%2 == 0 {
			aw, ac = run(atrest)
			cw, cc = run(clevis)
		} else {
			cw, cc = run(clevis)
			aw, ac = run(atrest)
		}
		at, acpu, ct, ccpu = append(at, aw), append(acpu, ac), append(ct, cw), append(ccpu, cc)
		ratios = append(ratios, float64(cw)/float64(aw))
	}
	b.StopTimer()
	b.ReportMetric(median(at), "atrest-ms/median")
	b.ReportMetric(median(ct), "clevis-ms/median")
	b.ReportMetric(median(acpu), "atrest-cpu-ms/median")
	b.ReportMetric(median(ccpu), "clevis-cpu-ms/median")
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "ratio")
	b.ReportMetric(ratios[len(ratios)/4], "ratio-p25")
	b.ReportMetric(ratios[len(ratios)*3/4], "ratio-p75")
	b.ReportMetric(loadAverage(b), "load1")
}

// loadAverage is the machine's 1-minute load average.
func loadAverage(b *testing.B) float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		b.Fatal(err)
	}
	var l float64
	if _, err := fmt.Sscan(string(data), &l); err != nil {
		b.Fatalf("/proc/loadavg: %v", err)
	}
	return l
}

func median(d []time.Duration) float64 {
	slices.Sort(d)
	return float64(d[len(d)/2].Microseconds()) / 1000
}

// tangServer runs tang on a free loopback port and returns its URL.
func tangServer(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	if out, err := exec.Command("/usr/libexec/tangd-keygen", dir).CombinedOutput(); err != nil {
		b.Fatalf("tangd-keygen: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("socat", fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork", port), "EXEC:/usr/libexec/tangd "+dir)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for range 100 {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// clevisVolume formats a LUKS2 image with cryptsetup (PBKDF2, 1000
// iterations) and binds it to tang with clevis; it returns the image and
// the keyslot clevis added.
func clevisVolume(b *testing.B, tang string) (img, slot string) {
	b.Helper()
	dir := b.TempDir()
	img = filepath.Join(dir, "clevis.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(img, 20<<20); err != nil {
		b.Fatal(err)
	}
	pass := benchKeyFile(b)
	for _, args := range [][]string{
		{"cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", pass, img},
		{"clevis", "luks", "bind", "-y", "-d", img, "-k", pass, "tang", fmt.Sprintf(`{"url":%q}`, tang)},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	out, err := exec.Command("clevis", "luks", "list", "-d", img).Output()
	if err != nil {
		b.Fatalf("clevis luks list: %v", err)
	}
	slot, _, _ = strings.Cut(strings.TrimSpace(string(out)), ":")
	return img, slot
}
