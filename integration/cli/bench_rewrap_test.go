package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms/backends"
	"github.com/atrest/atrest/pkg/volume"
)

// BenchmarkRewrapAll times `atrest rewrap --all --force` as a whole
// process for N volumes on image files named in the configuration, with
// Vault Transit on loopback: configuration, the scan of N headers, login,
// the Transit batch rewrap, the one unwrap batch that verifies the new
// ciphertexts, each keyslot checked, each token replaced in a synced
// header commit and each header backup refreshed. N is 256 and 1000, or
// ATREST_BENCH_REWRAP_VOLUMES. ms/volume is the wall time of one run over
// N, cpu-ms/volume the process's CPU time (user and system) over N, which
// other load on the machine stretches less than the wall time; the Vault
// requests of the same work are counted in-process by BenchmarkRewrap in
// pkg/volume (a constant: login, rewrap, unwrap). With
// ATREST_BENCH_BASE_BINARY set to another build of atrest (say, of the
// commit before a change), that binary runs too, alternating with this
// tree's on the same volumes (each first in turn), and base-ms/volume
// and base-cpu-ms/volume are its figures: before and after under the
// same load.
func BenchmarkRewrapAll(b *testing.B) {
	testutil.RequireRoot(b)
	sizes := []int{256, 1000}
	if s := os.Getenv("ATREST_BENCH_REWRAP_VOLUMES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("ATREST_BENCH_REWRAP_VOLUMES=%q is not a number of volumes", s)
		}
		sizes = []int{n}
	}
	srv := vaulttest.Shared(b)
	bins := []string{atrestReleaseBinary(b)}
	if base := os.Getenv("ATREST_BENCH_BASE_BINARY"); base != "" {
		bins = append(bins, base)
	}
	for _, n := range sizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			cfgPath := rewrapNode(b, srv, n)
			wall := make([]time.Duration, len(bins))
			cpu := make([]time.Duration, len(bins))
			b.ResetTimer()
			for i := range b.N {
				for k := range bins {
					k = (i + k) % len(bins) // each first in turn
					w, c := rewrapAllOnce(b, bins[k], cfgPath, n)
					wall[k] += w
					cpu[k] += c
				}
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N*n) }
			b.ReportMetric(per(wall[0]), "ms/volume")
			b.ReportMetric(per(cpu[0]), "cpu-ms/volume")
			if len(bins) > 1 {
				b.ReportMetric(per(wall[1]), "base-ms/volume")
				b.ReportMetric(per(cpu[1]), "base-cpu-ms/volume")
			}
		})
	}
}

// rewrapAllOnce runs `bin rewrap --all --force` once, checks that it
// rewrapped each of the n volumes, and returns its wall and CPU time.
func rewrapAllOnce(b *testing.B, bin, cfgPath string, n int) (wall, cpu time.Duration) {
	b.Helper()
	cmd := exec.Command(bin, "-c", cfgPath, "-o", "json", "rewrap", "--all", "--force")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	wall = time.Since(start)
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	// --all also finds LUKS devices of other tests on the machine, which
	// this configuration cannot rewrap: what counts is that every one of
	// its own volumes was.
	var doc struct {
		Volumes []struct {
			Name  string `json:"name"`
			Error string `json:"error"`
		} `json:"volumes"`
	}
	if jerr := json.Unmarshal(out, &doc); jerr != nil {
		b.Fatalf("%s rewrap --all: %v, %v\n%s%s", bin, err, jerr, out, stderr.String())
	}
	done := 0
	for _, v := range doc.Volumes {
		if strings.HasPrefix(v.Name, "rw") && v.Error == "" {
			done++
		}
	}
	if done != n {
		b.Fatalf("%s rewrap --all rewrapped %d of %d volumes (%v):\n%s%s", bin, done, n, err, out, stderr.String())
	}
	return wall, cpu
}

// rewrapNode writes a Vault Transit configuration naming n volumes on
// image files, formatted in-process (formatting is not what is timed), and
// returns its path.
func rewrapNode(b *testing.B, srv *vaulttest.Server, n int) string {
	b.Helper()
	vn := vaulttest.Provision(b, srv, fmt.Sprintf("rewrap%d", n), nil)
	dir := b.TempDir()
	base := fmt.Sprintf("kms: vault-transit\nvault:\n  address: %s\n  ca_file: %s\n  auth:\n    method: approle\n    role_id: %s\n    secret_id_file: %s\n  transit:\n    key: %s\nrecovery:\n  mode: none\nstate_dir: %s/state\n",
		srv.Address, srv.CAFile, vn.RoleID, vn.SecretIDFile, vn.Key, dir)
	path := filepath.Join(dir, "atrest.yaml")
	if err := os.WriteFile(path, []byte(base), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	set, err := backends.Open(cfg, func(string) string { return "" })
	if err != nil {
		b.Fatal(err)
	}
	defer set.Close()
	m := volume.New(cfg, set, volume.WithRunDir(filepath.Join(dir, "run")))
	var list strings.Builder
	list.WriteString("volumes:\n")
	for i := range n {
		img := filepath.Join(dir, fmt.Sprintf("v%04d.img", i))
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			b.Fatal(err)
		}
		if err := os.Truncate(img, 20<<20); err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("rw%04d", i)
		if _, err := m.Format(context.Background(), volume.FormatOptions{Device: img, Name: name}); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(&list, "  - name: %s\n    device: %s\n", name, img)
	}
	if err := os.WriteFile(path, []byte(base+list.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}
