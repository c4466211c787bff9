package cli

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// BenchmarkUnlockProcess compares whole-process cold unlocks, neither
// mapping anything, each iteration running both so that load from
// elsewhere falls on both alike:
//
//   - atrest: `atrest open --test VOLUME...` of volumes formatted through
//     the binary with Vault Transit: process start, configuration, the
//     header reads, TLS to Vault on loopback, AppRole login, one unwrap
//     batch and the PBKDF2-SHA512/1000 keyslots (a new process every
//     time, so a cold client, TLS handshake and login);
//   - clevis: `clevis luks pass -d IMAGE -s SLOT | cryptsetup open
//     --test-passphrase --key-slot SLOT --key-file - IMAGE` per volume,
//     the keyslot `clevis luks bind` made (PBKDF2, 1000 iterations) and
//     tang on 127.0.0.1 (socat forking tangd per connection); for several
//     volumes all pipelines at once, as parallel systemd-cryptsetup
//     units would run them.
//
// /1 is one volume (on a loop device), /N the batch of N image files
// (64, or ATREST_BENCH_PROCESS_VOLUMES). The two run in pairs, their
// order alternating from pair to pair. It reports the median wall time of
// each (atrest-ms/median, clevis-ms/median), the median CPU time (user
// and system, the clevis pipelines' processes included; neither Vault's
// nor tang's) of each (atrest-cpu-ms/median, clevis-cpu-ms/median), the
// median of the pairs' ratios clevis/atrest (ratio; a pair shares the
// machine's load, so its ratio is steadier than the ratio of the
// medians) with its quartiles (ratio-p25, ratio-p75), and the 1-minute
// load average at the end (load1): other work on the machine stretches
// both, and a loaded machine stretches the shorter run more.
// ATREST_BENCH_BASE_BINARY names another build of atrest to run in the
// same rounds against the same volumes (base-ms/median,
// base-cpu-ms/median), as BenchmarkFormat1GiB does: a change is measured
// against the build before it in one run.
// scripts/bench-all.sh prints them.
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
	tang := tangServer(b)
	base := os.Getenv("ATREST_BENCH_BASE_BINARY")
	b.Run("1", func(b *testing.B) {
		dev := benchDisk(b)
		if out, err := exec.Command(bin, "-c", n.config, "format", dev, "--name", "ulk", "--force").CombinedOutput(); err != nil {
			b.Fatalf("format: %v\n%s", err, out)
		}
		img, slot := clevisVolume(b, tang)
		comparePairs(b, exec.Command(bin, "-c", n.config, "open", "--test", dev),
			exec.Command("sh", "-c", clevisUnlock([]string{img}, slot)), baseCommand(base, "-c", n.config, "open", "--test", dev))
	})
	count := 64
	if s := os.Getenv("ATREST_BENCH_PROCESS_VOLUMES"); s != "" {
		var err error
		if count, err = strconv.Atoi(s); err != nil || count < 1 {
			b.Fatalf("ATREST_BENCH_PROCESS_VOLUMES=%q is not a number of volumes", s)
		}
	}
	b.Run(strconv.Itoa(count), func(b *testing.B) {
		dir := b.TempDir()
		args := []string{"-c", n.config, "open", "--test"}
		for i := range count {
			img := filepath.Join(dir, fmt.Sprintf("a%04d.img", i))
			if err := os.WriteFile(img, nil, 0o600); err != nil {
				b.Fatal(err)
			}
			if err := os.Truncate(img, 20<<20); err != nil {
				b.Fatal(err)
			}
			if out, err := exec.Command(bin, "-c", n.config, "format", img, "--name", fmt.Sprintf("pv%04d", i), "--recovery", "none", "--force").CombinedOutput(); err != nil {
				b.Fatalf("format: %v\n%s", err, out)
			}
			args = append(args, img)
		}
		// The clevis volumes are copies of one bound image: cryptsetup
		// does not mind their equal UUIDs, and a bind costs seconds.
		img, slot := clevisVolume(b, tang)
		imgs := []string{img}
		for i := 1; i < count; i++ {
			c := filepath.Join(dir, fmt.Sprintf("c%04d.img", i))
			if out, err := exec.Command("cp", "--sparse=always", img, c).CombinedOutput(); err != nil {
				b.Fatalf("cp: %v\n%s", err, out)
			}
			imgs = append(imgs, c)
		}
		comparePairs(b, exec.Command(bin, args...), exec.Command("sh", "-c", clevisUnlock(imgs, slot)), baseCommand(base, args...))
	})
}

// clevisUnlock is a shell command that unlocks every image with clevis
// and cryptsetup --test-passphrase, all at once, and fails if one does.
func clevisUnlock(imgs []string, slot string) string {
	if len(imgs) == 1 {
		return fmt.Sprintf("clevis luks pass -d %s -s %s | cryptsetup open --test-passphrase --key-slot %s --key-file - %s", imgs[0], slot, slot, imgs[0])
	}
	var sb strings.Builder
	sb.WriteString("pids=; ")
	for _, img := range imgs {
		fmt.Fprintf(&sb, "(clevis luks pass -d %s -s %s | cryptsetup open --test-passphrase --key-slot %s --key-file - %s) & pids=\"$pids $!\"; ", img, slot, slot, img)
	}
	sb.WriteString("rc=0; for p in $pids; do wait $p || rc=1; done; exit $rc")
	return sb.String()
}

// comparePairs runs atrest and clevis b.N times each, in pairs whose
// order alternates, and reports the figures BenchmarkUnlockProcess
// describes. base, when not nil, is the same atrest command of another
// build (ATREST_BENCH_BASE_BINARY): it joins each round, the three taking
// turns at running first, and reports base-ms/median and
// base-cpu-ms/median.
func comparePairs(b *testing.B, atrest, clevis, base *exec.Cmd) {
	run := func(cmd *exec.Cmd) (wall, cpu time.Duration) {
		c := exec.Command(cmd.Args[0], cmd.Args[1:]...)
		start := time.Now()
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", c.Args[:min(len(c.Args), 6)], err, out)
		}
		wall = time.Since(start)
		return wall, c.ProcessState.UserTime() + c.ProcessState.SystemTime()
	}
	cmds := []*exec.Cmd{atrest, clevis}
	if base != nil {
		cmds = append(cmds, base)
	}
	walls := make([][]time.Duration, len(cmds))
	cpus := make([][]time.Duration, len(cmds))
	var ratios []float64
	b.ResetTimer()
	for i := range b.N {
		for k := range cmds {
			r := (i + k) % len(cmds)
			w, c := run(cmds[r])
			walls[r], cpus[r] = append(walls[r], w), append(cpus[r], c)
		}
		ratios = append(ratios, float64(walls[1][i])/float64(walls[0][i]))
	}
	b.StopTimer()
	b.ReportMetric(median(walls[0]), "atrest-ms/median")
	b.ReportMetric(median(walls[1]), "clevis-ms/median")
	b.ReportMetric(median(cpus[0]), "atrest-cpu-ms/median")
	b.ReportMetric(median(cpus[1]), "clevis-cpu-ms/median")
	if base != nil {
		b.ReportMetric(median(walls[2]), "base-ms/median")
		b.ReportMetric(median(cpus[2]), "base-cpu-ms/median")
	}
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "ratio")
	b.ReportMetric(ratios[len(ratios)/4], "ratio-p25")
	b.ReportMetric(ratios[len(ratios)*3/4], "ratio-p75")
	b.ReportMetric(loadAverage(b), "load1")
}

// baseCommand is bin run with args, or nil when bin is "" (no other build
// to compare with).
func baseCommand(bin string, args ...string) *exec.Cmd {
	if bin == "" {
		return nil
	}
	return exec.Command(bin, args...)
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
