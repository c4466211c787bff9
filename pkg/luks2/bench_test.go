package luks2

import (
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkOpenPlatformKeyslot measures opening the PBKDF2-SHA512/1000
// platform keyslot of an in-memory device: the CPU part of an unlock.
// cpu-ms/op is the process's CPU time per open, which load from other
// work on the machine inflates far less than the wall time.
func BenchmarkOpenPlatformKeyslot(b *testing.B) {
	dev, h, _ := formatted(b, FormatOptions{})
	p := pass(b, "platform")
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		vk, err := h.OpenKeyslot(dev, 0, p)
		if err != nil {
			b.Fatal(err)
		}
		vk.Wipe()
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

// cpuTime is the process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkOpenKeyslots opens n platform keyslots (PBKDF2-SHA512/1000,
// one per in-memory device) in one OpenKeyslots batch, as an unlock of n
// volumes does: one volume (atrest open), a few, and 64 (a boot);
// cpu-ms/keyslot is the process's CPU time per keyslot, against
// BenchmarkOpenPlatformKeyslot's one at a time.
func BenchmarkOpenKeyslots(b *testing.B) {
	for _, n := range []int{1, 2, 3, 8, 64} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			jobs := make([]KeyslotJob, n)
			for i := range jobs {
				dev, h, _ := formatted(b, FormatOptions{})
				jobs[i] = KeyslotJob{Header: h, Dev: dev, Slot: 0, Passphrase: pass(b, "platform")}
			}
			cpu0 := cpuTime()
			b.ResetTimer()
			for range b.N {
				keys, errs := OpenKeyslots(jobs)
				for i := range keys {
					if errs[i] != nil {
						b.Fatal(errs[i])
					}
					keys[i].Wipe()
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N*len(jobs)), "cpu-ms/keyslot")
		})
	}
}
