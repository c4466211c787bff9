package cli

import (
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// BenchmarkFormat1GiB times `atrest format --force` of a 1 GiB loop device
// (the whole command: config, preflight, KMS, LUKS2, verification, header
// backup) with the local keystore and with Vault Transit plus escrow,
// next to `cryptsetup luksFormat --type luks2 --pbkdf pbkdf2
// --pbkdf-force-iterations 1000` in the same run; each sub-benchmark
// reports its median as ms/median (`make bench` runs it). The binary is a
// release build (atrestReleaseBinary), not the failpoints build the
// tests use.
func BenchmarkFormat1GiB(b *testing.B) {
	run := func(b *testing.B, cmd func() *exec.Cmd) {
		var times []time.Duration
		for i := 0; i < b.N; i++ {
			c := cmd()
			start := time.Now()
			if out, err := c.CombinedOutput(); err != nil {
				b.Fatalf("%v: %v\n%s", c.Args, err, out)
			}
			times = append(times, time.Since(start))
		}
		slices.Sort(times)
		b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "ms/median")
	}
	b.Run("atrest-local", func(b *testing.B) {
		n := benchNode(b, nil)
		dev := benchDisk(b)
		run(b, func() *exec.Cmd {
			return exec.Command(atrestReleaseBinary(b), "-c", n.config, "format", dev, "--name", "bench", "--force")
		})
	})
	b.Run("atrest-vault", func(b *testing.B) {
		srv := vaulttest.Shared(b)
		n := benchNode(b, srv)
		dev := benchDisk(b)
		run(b, func() *exec.Cmd {
			return exec.Command(atrestReleaseBinary(b), "-c", n.config, "format", dev, "--name", "bench", "--force")
		})
	})
	b.Run("cryptsetup", func(b *testing.B) {
		dev := benchDisk(b)
		key := benchKeyFile(b)
		run(b, func() *exec.Cmd {
			return exec.Command("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", key, dev)
		})
	})
}
