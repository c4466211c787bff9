package luks2

import (
	"os/exec"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/kdf"
)

// The benchmarks report the median of their iterations (ms/median) next to
// Go's mean, and run the cryptsetup command they are compared with in the
// same invocation. scripts/bench-luks2.sh prints the comparison.

// medianMS runs one timed iteration b.N times and reports the median and
// the fastest wall time, and the CPU time (user+system, this process and its children) per
// iteration, which other load on the machine does not inflate.
func medianMS(b *testing.B, iter func()) {
	b.Helper()
	samples := make([]time.Duration, 0, b.N)
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		iter()
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2])/float64(time.Millisecond), "ms/median")
	b.ReportMetric(float64(samples[0])/float64(time.Millisecond), "ms/min")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "ms-cpu/op")
}

func cpuTime() time.Duration {
	var total time.Duration
	for _, who := range []int{unix.RUSAGE_SELF, unix.RUSAGE_CHILDREN} {
		var ru unix.Rusage
		if unix.Getrusage(who, &ru) == nil {
			total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return total
}

// BenchmarkFormat1GiB: atrest formats a 1 GiB loop device with one
// platform keyslot and its token, then cryptsetup formats the same device
// with PBKDF2 forced to 1000 iterations.
func BenchmarkFormat1GiB(b *testing.B) {
	requireTier(b)
	path := loopDevice(b, 1<<30)
	platform := key(b, platformPass)
	b.Run("atrest", func(b *testing.B) {
		medianMS(b, func() {
			dev, err := luks2.OpenFile(path, true)
			if err != nil {
				b.Fatal(err)
			}
			defer dev.Close()
			h, vk, err := luks2.New(luks2.FormatOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer vk.Wipe()
			u, _ := h.Begin()
			if _, err := u.AddKeyslot(vk, platform, luks2.KeyslotOptions{Slot: 0, KDF: kdf.Platform()}); err != nil {
				b.Fatal(err)
			}
			if _, err := u.SetToken(0, []byte(atrestToken)); err != nil {
				b.Fatal(err)
			}
			if _, err := u.Commit(ctx(b), dev); err != nil {
				b.Fatal(err)
			}
		})
	})
	kf := keyFile(b, platformPass)
	b.Run("cryptsetup", func(b *testing.B) {
		medianMS(b, func() {
			cmd := exec.Command("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2",
				"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", kf, path)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		})
	})
}

// BenchmarkOpenPlatformKeyslot: atrest opens the PBKDF2-SHA512/1000
// platform keyslot (derive, read and decrypt the area, merge, check the
// digest) of a formatted loop device; then the same with cryptsetup open
// --test-passphrase (a whole process, so not a like-for-like figure).
func BenchmarkOpenPlatformKeyslot(b *testing.B) {
	requireTier(b)
	path := loopDevice(b, 64*mib)
	formatAtrest(b, path, luks2.FormatOptions{})
	dev := openDev(b, path)
	h := read(b, dev)
	platform := key(b, platformPass)
	b.Run("atrest", func(b *testing.B) {
		medianMS(b, func() {
			vk, err := h.OpenKeyslot(dev, 0, platform)
			if err != nil {
				b.Fatal(err)
			}
			vk.Wipe()
		})
	})
	b.Run("atrest-read-and-open", func(b *testing.B) {
		medianMS(b, func() {
			h, err := luks2.Read(ctx(b), dev)
			if err != nil {
				b.Fatal(err)
			}
			vk, err := h.OpenKeyslot(dev, 0, platform)
			if err != nil {
				b.Fatal(err)
			}
			vk.Wipe()
		})
	})
	kf := keyFile(b, platformPass)
	b.Run("cryptsetup", func(b *testing.B) {
		medianMS(b, func() {
			cmd := exec.Command("cryptsetup", "open", "--test-passphrase", "--key-slot", "0", "--key-file", kf, path)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		})
	})
}
