package volume

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/atrest/atrest/internal/testutil/swtpmtest"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms/backends"
)

// BenchmarkOpen32TPM is one boot's unlock of 32 volumes on swtpm, end to
// end through Open --test (everything but the dm-crypt mapping), keyslots
// included:
//
//   - kms-tpm: 32 kms: tpm volumes; each iteration is a fresh Manager, so
//     the sealed KEK is unsealed once, as atrestd does once per boot, and
//     serves all 32 platform keyslots;
//   - tpm-keyslots: 32 volumes opened through their systemd-tpm2 keyslots
//     (the platform path unavailable): one unseal per volume (primary key,
//     load, policy session, unseal), which is what systemd's token path
//     (systemd-cryptsetup, cryptsetup open --token-only) does per volume.
//     cryptsetup's systemd-tpm2 plugin itself cannot run on the host (it
//     finds only a kernel TPM): this is its TPM work done by atrest.
//
// ns/op is one boot of all 32 volumes.
func BenchmarkOpen32TPM(b *testing.B) {
	const n = 32
	sw := swtpmtest.Start(b)
	sw.ExtendPCR7(b)
	manager := func(kms, dir string) *Manager {
		cfg := &config.Config{KMS: kms, Local: config.Local{Keystore: filepath.Join(dir, "kek")},
			TPM:      config.TPM{Device: sw.Device, PCRs: []int{7}, Reseal: config.ResealNever},
			StateDir: filepath.Join(dir, "state"), Recovery: config.Recovery{Mode: config.RecoveryNone}}
		set, err := backends.Open(cfg, func(string) string { return "" })
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { set.Close() })
		return New(cfg, set, WithRunDir(filepath.Join(dir, "run")))
	}
	ctx := context.Background()
	boot := func(b *testing.B, m *Manager, vols []*Volume, want string) {
		for _, r := range m.Open(ctx, vols, OpenOptions{Test: true}) {
			if r.Err != nil || !slices.Equal(r.By, []string{want}) {
				b.Fatalf("%s: opened by %v, %v; want %s", r.Name, r.By, r.Err, want)
			}
		}
	}

	b.Run("kms-tpm", func(b *testing.B) {
		dir := b.TempDir()
		vols := formatVolumes(b, manager(config.BackendTPM, dir), n)
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			m := manager(config.BackendTPM, dir)
			b.StartTimer()
			boot(b, m, vols, config.BackendTPM)
		}
	})
	b.Run("tpm-keyslots", func(b *testing.B) {
		dir := b.TempDir()
		m := manager(config.BackendLocal, dir)
		vols := formatVolumes(b, m, n)
		for i, v := range vols {
			if _, err := m.TPMEnroll(ctx, v, TPMOptions{PCRs: []int{7}}); err != nil {
				b.Fatal(err)
			}
			var err error
			if vols[i], err = m.load(ctx, v.Device); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.Remove(filepath.Join(dir, "kek")); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			m := manager(config.BackendLocal, dir)
			b.StartTimer()
			boot(b, m, vols, FactorTPMKeyslot)
		}
	})
}
