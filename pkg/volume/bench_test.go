package volume

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms/backends"
)

func TestMain(m *testing.M) { os.Exit(vaulttest.Main(m)) }

// BenchmarkUnlock is the work `atrest open --all` and atrestd do for 32
// and 64 volumes, without the kernel part (Manager.unlock, which Open
// calls): one batched KMS unwrap for all platform secrets, then the
// platform keyslots opened, as many at a time as there are CPUs. The local
// keystore and Vault Transit (a real server on loopback) are measured in
// the same run. scripts/bench-unlock.sh compares the 32-volume figures
// with clevis and tang.
func BenchmarkUnlock(b *testing.B) {
	for _, n := range []int{32, 64} {
		b.Run(fmt.Sprintf("local/%d", n), func(b *testing.B) {
			dir := b.TempDir()
			cfg := &config.Config{KMS: config.BackendLocal, Local: config.Local{Keystore: filepath.Join(dir, "kek")},
				StateDir: filepath.Join(dir, "state"), Recovery: config.Recovery{Mode: config.RecoveryNone}}
			benchUnlock(b, cfg, n)
		})
		b.Run(fmt.Sprintf("vault-transit/%d", n), func(b *testing.B) {
			srv := vaulttest.Shared(b)
			vn := vaulttest.Provision(b, srv, fmt.Sprintf("bench%d", n), nil)
			dir := b.TempDir()
			cfg := &config.Config{KMS: config.BackendVaultTransit, StateDir: filepath.Join(dir, "state"),
				Recovery: config.Recovery{Mode: config.RecoveryNone},
				Vault: config.Vault{Address: srv.Address, CAFile: srv.CAFile,
					Auth:    config.VaultAuth{Method: "approle", Mount: "approle", RoleID: vn.RoleID, SecretIDFile: vn.SecretIDFile},
					Transit: config.VaultTransit{Mount: "transit", Key: vn.Key}}}
			benchUnlock(b, cfg, n)
		})
	}
}

func benchUnlock(b *testing.B, cfg *config.Config, n int) {
	set, err := backends.Open(cfg, func(string) string { return "" })
	if err != nil {
		b.Fatal(err)
	}
	defer set.Close()
	benchUnlockOn(b, New(cfg, set, WithRunDir(b.TempDir())), n, nil)
}

// benchUnlockOn formats n volumes with m, runs ready (if any), then
// measures unlocking all of them in one call.
func benchUnlockOn(b *testing.B, m *Manager, n int, ready func()) {
	ctx := context.Background()
	dir := b.TempDir()
	vols := make([]*Volume, n)
	for i := range n {
		img := filepath.Join(dir, fmt.Sprintf("vol%02d.img", i))
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			b.Fatal(err)
		}
		if err := os.Truncate(img, 20<<20); err != nil {
			b.Fatal(err)
		}
		if _, err := m.Format(ctx, FormatOptions{Device: img, Name: fmt.Sprintf("b%02d", i)}); err != nil {
			b.Fatal(err)
		}
		var err error
		if vols[i], err = m.load(ctx, img); err != nil {
			b.Fatal(err)
		}
	}
	if ready != nil {
		ready()
	}
	b.ResetTimer()
	for range b.N {
		keys, errs := m.unlock(ctx, vols)
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		wipeAll(keys)
	}
}
