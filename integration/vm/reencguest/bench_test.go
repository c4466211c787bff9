package reencguest

import (
	"testing"
	"time"

	"github.com/atrest/atrest/integration/vm/guest"
)

// The online re-encryption's throughput next to cryptsetup's on the same
// size, each on an open (unmounted) volume of its own with the default
// hotzone, in the same guest. The figures are logged, never asserted:
// under QEMU's software emulation they compare the two tools, they are no
// measure of either on real hardware.
func TestOnlineThroughputBesideCryptsetup(t *testing.T) {
	const sizeMiB = 128
	n := newNode(t)
	a := guest.Disk(t, sizeMiB).Path
	n.want("format", a, "--name", "bench")
	n.want("open", "bench")
	t.Cleanup(func() { _ = n.cmd("close", "bench").Run() })
	r := parseReport(t, n.want("-o", "json", "reencrypt", "bench"))
	v := r.Volumes[0]

	c := guest.Disk(t, sizeMiB).Path
	kf := guest.KeyFile(t, []byte("bench"))
	guest.LUKSFormat(t, c, kf)
	guest.Run(t, "cryptsetup", "open", "--key-file", kf, c, "csbench")
	t.Cleanup(func() { _, _ = guest.Try("cryptsetup", "close", "csbench") })
	start := time.Now()
	guest.Run(t, "cryptsetup", append(append([]string{"reencrypt", "--batch-mode", "--key-file", kf, "--resilience", "checksum", "--active-name", "csbench"}, guest.CheapKDF...), c)...)
	cs := time.Since(start).Seconds()
	mb := float64(v.Bytes) / 1e6
	t.Logf("online re-encryption of %d MiB in the guest: atrest %.1f s (%.1f MB/s, from its -o json report), cryptsetup reencrypt %.1f s (%.1f MB/s, including its key unlock)",
		sizeMiB, v.Seconds, mb/v.Seconds, cs, mb/cs)
}
