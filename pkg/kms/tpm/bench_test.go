package tpm_test

import (
	"context"
	"testing"

	"github.com/atrest/atrest/internal/testutil/swtpmtest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/tpm"
	"github.com/atrest/atrest/pkg/tpm2"
)

// BenchmarkBoot32KEK is one boot's unlock of 32 kms: tpm volumes: a new
// process opens the sealed KEK and unwraps the 32 tokens, one volume at a
// time (one unseal in all).
func BenchmarkBoot32KEK(b *testing.B) {
	sw := swtpmtest.Start(b)
	cfg := tpm.Config{Device: sw.Device, Path: b.TempDir() + "/" + tpm.FileName, PCRs: []int{7}}
	k, err := tpm.Open(cfg, true)
	if err != nil {
		b.Fatal(err)
	}
	reqs, _ := wrapMany(b, k, 32)
	k.Close()
	b.ResetTimer()
	for b.Loop() {
		boot, err := tpm.Open(cfg, false)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range reqs {
			pt, err := kms.Unwrap(context.Background(), boot, r.Context, r.Wrapped)
			if err != nil {
				b.Fatal(err)
			}
			pt.Wipe()
		}
		if n := boot.Unseals(); n != 1 {
			b.Fatalf("%d unseals for 32 volumes", n)
		}
		boot.Close()
	}
	b.ReportMetric(1, "unseals/boot")
}

// BenchmarkBoot32Tokens is the same boot through 32 systemd-tpm2 keyslots
// (systemd's token path): one unseal per volume.
func BenchmarkBoot32Tokens(b *testing.B) {
	sw := swtpmtest.Start(b)
	tp, err := tpm2.Open(sw.Device)
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	var sealed []tpm2.Sealed
	for range 32 {
		sec, res, err := tp.Seal(tpm2.SealOptions{PCRs: []int{7}})
		if err != nil {
			b.Fatal(err)
		}
		sec.Wipe()
		sealed = append(sealed, res.Sealed)
	}
	b.ResetTimer()
	for b.Loop() {
		for i := range sealed {
			sec, err := tp.Unseal(&sealed[i], nil)
			if err != nil {
				b.Fatal(err)
			}
			sec.Wipe()
		}
	}
	b.ReportMetric(32, "unseals/boot")
}
