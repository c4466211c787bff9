package volume

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms/backends"
)

func TestMain(m *testing.M) { os.Exit(vaulttest.Main(m)) }

// BenchmarkUnlock is the work `atrest open --all` and atrestd do for n
// volumes (32 and 64, or ATREST_BENCH_VOLUMES), without the kernel part
// (Manager.unlock, which Open calls): one batched KMS unwrap for all
// platform secrets, then the platform keyslots opened, as many at a time
// as there are CPUs. The local keystore and Vault Transit (a real server
// on loopback, client already logged in) alternate within every
// iteration, so load falls on both alike; local-ms/op and vault-ms/op are
// each one unlock of all n volumes (ns/op is their sum), the -cpu- metrics
// the process's CPU time (user+system) for it, which other load on the
// machine does not stretch as it stretches wall time. Login, TLS and
// the header scan of a whole `atrest open` are not in it.
// scripts/bench-unlock.sh compares the figures with clevis and tang.
func BenchmarkUnlock(b *testing.B) {
	sizes := benchSizes(b, "ATREST_BENCH_VOLUMES", 32, 64)
	ctx := context.Background()
	for _, n := range sizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			lm, lvols := benchVolumes(b, benchConfig(b, "local", ""), n)
			vm, vvols := benchVolumes(b, benchConfig(b, "vault-transit", fmt.Sprintf("bench%d", n)), n)
			unlock := func(m *Manager, vols []*Volume) (wall, cpu time.Duration) {
				start, cpu0 := time.Now(), cpuTime()
				keys, errs := m.unlock(ctx, vols)
				wall, cpu = time.Since(start), cpuTime()-cpu0
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
				wipeAll(keys)
				return wall, cpu
			}
			var local, vault, localCPU, vaultCPU time.Duration
			b.ResetTimer()
			for range b.N {
				w, c := unlock(lm, lvols)
				local, localCPU = local+w, localCPU+c
				w, c = unlock(vm, vvols)
				vault, vaultCPU = vault+w, vaultCPU+c
			}
			perOp := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 / float64(b.N) }
			b.ReportMetric(perOp(local), "local-ms/op")
			b.ReportMetric(perOp(vault), "vault-ms/op")
			b.ReportMetric(perOp(localCPU), "local-cpu-ms/op")
			b.ReportMetric(perOp(vaultCPU), "vault-cpu-ms/op")
			b.ReportMetric(perOp(localCPU)/float64(n), "local-cpu-ms/volume")
		})
	}
}

// benchVolumes formats n volumes on image files with cfg's KMS.
func benchVolumes(b *testing.B, cfg *config.Config, n int) (*Manager, []*Volume) {
	set, err := backends.Open(cfg, func(string) string { return "" })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { set.Close() })
	m := New(cfg, set, WithRunDir(b.TempDir()))
	return m, formatVolumes(b, m, n)
}

// formatVolumes formats n volumes on image files with m.
func formatVolumes(b *testing.B, m *Manager, n int) []*Volume {
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
		v, err := m.load(ctx, img)
		if err != nil {
			b.Fatal(err)
		}
		vols[i] = v
	}
	return vols
}

// BenchmarkRewrap is `atrest rewrap --all --force` in-process for 64 and
// 256 volumes on image files, end to end: the KMS rewrap and unwrap
// batches, each keyslot checked, each token replaced in a synced header
// commit and each header backup refreshed. The local keystore and Vault
// Transit alternate within one run; ns/op is for all the volumes (divide
// by n for the figure per volume; ms/volume does), cpu-ms/volume the
// process's CPU time per volume and vault-requests/op the HTTP requests
// the Vault client sent for all n (a constant, not n).
// ATREST_BENCH_REWRAP_VOLUMES=N runs N volumes instead (1000 in make bench).
func BenchmarkRewrap(b *testing.B) {
	sizes := benchSizes(b, "ATREST_BENCH_REWRAP_VOLUMES", 64, 256)
	for _, n := range sizes {
		for _, kms := range []string{"local", "vault-transit"} {
			b.Run(fmt.Sprintf("%s/%d", kms, n), func(b *testing.B) {
				m, vols := benchVolumes(b, benchConfig(b, kms, fmt.Sprintf("rewrap%d", n)), n)
				benchChanges(b, m, vols, func() {
					for _, r := range m.Rewrap(context.Background(), vols, true) {
						if r.Err != nil {
							b.Fatal(r.Err)
						}
					}
				})
			})
		}
	}
}

// benchChanges times run, a change of every volume of vols, b.N times,
// reading the volumes again after each run (untimed), and reports
// ms/volume, cpu-ms/volume (the process's CPU time) and
// vault-requests/op (the Vault client's requests of one run, for all the
// volumes).
func benchChanges(b *testing.B, m *Manager, vols []*Volume, run func()) {
	ctx := context.Background()
	var cpu time.Duration
	var requests int64
	b.ResetTimer()
	for range b.N {
		cpu0, req0 := cpuTime(), vaultRequests(m)
		run()
		cpu += cpuTime() - cpu0
		requests += vaultRequests(m) - req0
		b.StopTimer()
		for i, v := range vols {
			var err error
			if vols[i], err = m.load(ctx, v.Device); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	n := len(vols)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e6/float64(b.N*n), "ms/volume")
	b.ReportMetric(float64(cpu.Nanoseconds())/1e6/float64(b.N*n), "cpu-ms/volume")
	b.ReportMetric(float64(requests)/float64(b.N), "vault-requests/op")
}

// BenchmarkRekey is `atrest rekey --all` in-process for 64 volumes (or
// ATREST_BENCH_REKEY_VOLUMES) with Vault Transit: "batch" is RekeyEach,
// which the CLI runs (one wrap and one unwrap batch for all the volumes),
// "alone" Rekey of each volume in turn (what the CLI did before: three
// requests per volume). ms/volume and cpu-ms/volume are per volume,
// vault-requests/op the Vault client's requests for all n.
func BenchmarkRekey(b *testing.B) {
	for _, n := range benchSizes(b, "ATREST_BENCH_REKEY_VOLUMES", 64) {
		for _, mode := range []string{"batch", "alone"} {
			b.Run(fmt.Sprintf("%s/%d", mode, n), func(b *testing.B) {
				m, vols := benchVolumes(b, benchConfig(b, "vault-transit", fmt.Sprintf("rekey%s%d", mode, n)), n)
				ctx := context.Background()
				benchChanges(b, m, vols, func() {
					if mode == "batch" {
						m.RekeyEach(ctx, vols, RekeyOptions{}, func(_ *Volume, _ *RekeyResult, err error) {
							if err != nil {
								b.Fatal(err)
							}
						})
						return
					}
					for _, v := range vols {
						if _, err := m.Rekey(ctx, v, RekeyOptions{}); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	}
}

// benchConfig is a configuration for the named KMS ("local" or
// "vault-transit", a real server on loopback, with an AppRole and a
// Transit key for node) in a temporary directory.
func benchConfig(b testing.TB, kms, node string) *config.Config {
	dir := b.TempDir()
	if kms == "local" {
		return &config.Config{KMS: config.BackendLocal, Local: config.Local{Keystore: filepath.Join(dir, "kek")},
			StateDir: filepath.Join(dir, "state"), Recovery: config.Recovery{Mode: config.RecoveryNone}}
	}
	srv := vaulttest.Shared(b)
	vn := vaulttest.Provision(b, srv, node, nil)
	return &config.Config{KMS: config.BackendVaultTransit, StateDir: filepath.Join(dir, "state"),
		Recovery: config.Recovery{Mode: config.RecoveryNone},
		Vault: config.Vault{Address: srv.Address, CAFile: srv.CAFile,
			Auth:    config.VaultAuth{Method: "approle", Mount: "approle", RoleID: vn.RoleID, SecretIDFile: vn.SecretIDFile},
			Transit: config.VaultTransit{Mount: "transit", Key: vn.Key}}}
}

// cpuTime is the process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// vaultRequests is the number of requests m's Vault client sent so far (0
// without Vault).
func vaultRequests(m *Manager) int64 {
	if c := m.kms.Vault(); c != nil {
		return c.Stats().Requests
	}
	return 0
}

// benchSizes is the numbers of volumes a benchmark runs: the defaults, or
// the one the environment variable env names.
func benchSizes(b *testing.B, env string, defaults ...int) []int {
	s := os.Getenv(env)
	if s == "" {
		return defaults
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q is not a number of volumes", env, s)
	}
	return []int{n}
}
