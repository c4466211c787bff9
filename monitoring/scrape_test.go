package monitoring_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/looptest"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/daemon"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/backends"
)

var update = flag.Bool("update", false, "rewrite testdata/scrape.txt from a real atrestd")

// The golden file of the series a real atrestd exposes: every atrest_
// series of one scrape with its labels, values dropped, the volume's UUID
// replaced by <uuid>, in the daemon's order. The rules, their tests and
// the dashboard may only use what it holds (TestRulesUseExposedSeries,
// TestDashboard).
const goldenScrape = "testdata/scrape.txt"

// The volume of the scrape test; volumes of other tests running on the
// machine (atrestd finds every atrest volume) are left out of the golden
// file.
const scrapeVolume = "mon1"

// TestScrapeMatchesGolden runs atrestd (pkg/daemon, in process) as a node
// would, three times, with one volume it provisions on a blank loop
// device (run 1). Unlocking fails throughout (no device-mapper on the
// host). Before run 2 the KEK is rotated: the periodic rewrap succeeds.
// Before run 3 it is rotated again and the token's version retired, and
// the header backup deleted: the rewrap fails, a KMS error, the volume
// stays stale and its header backup shows missing. The series of
// runs 2 and 3 are those of every state the alerts watch; they must match
// testdata/scrape.txt (-update rewrites it), with those of run 4: atrestd
// with a real Vault and no volume, for the Vault client's counters.
func TestScrapeMatchesGolden(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	disk := looptest.Disk(t, 32)
	sock := filepath.Join(dir, "metrics.sock")
	path := filepath.Join(dir, "atrest.yaml")
	doc := fmt.Sprintf(`kms: local
local:
  keystore: %[1]s/kek
state_dir: %[1]s/state
recovery:
  mode: none
volumes:
  - name: %[2]s
    device: %[3]s
    format: true
  - name: gone
    device: /dev/atrest-test-no-such-disk
    required: false
daemon:
  metrics: unix:%[4]s
  ready_timeout: 1s
  retry_min: 100ms
  retry_max: 300ms
  rescan: 1h
  rewrap: 1s
  require_discovered: false
`, dir, scrapeVolume, disk.Path, sock)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", "")

	// First run: atrestd formats the blank disk (and makes the KEK).
	stop := runDaemon(t, path, dir)
	waitFor(t, sock, "the provisioned volume", func(s map[string]string) bool {
		return hasPrefix(s, `atrest_last_rekey_age_seconds{`)
	})
	stop()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	set, err := backends.Open(cfg, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	w, err := set.Wrapper()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	info, err := w.(kms.Rotator).Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stop = runDaemon(t, path, dir)
	var ok, failed map[string]string
	waitFor(t, sock, "a rewrap", func(s map[string]string) bool {
		ok = s
		return s["atrest_stale_key_versions"] == "0" && hasPrefix(s, `atrest_kms_request_duration_seconds_count{op="rewrap",result="ok"}`) &&
			hasPrefix(s, `atrest_volume_header_backup{name="`+scrapeVolume+`",state="current"`)
	})
	stop()
	if info, err = w.(kms.Rotator).Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.(kms.Retirer).SetMinDecryptionVersion(ctx, info.LatestVersion); err != nil {
		t.Fatal(err)
	}
	// And the header backup is lost: the health gauges say so.
	if err := os.RemoveAll(filepath.Join(dir, "state", "backups")); err != nil {
		t.Fatal(err)
	}
	stop = runDaemon(t, path, dir)
	waitFor(t, sock, "a failed rewrap", func(s map[string]string) bool {
		failed = s
		return s["atrest_stale_key_versions"] == "1" && hasPrefix(s, `atrest_kms_request_duration_seconds_count{op="rewrap",result="error"}`) &&
			hasPrefix(s, `atrest_volume_header_backup{name="`+scrapeVolume+`",state="missing"`)
	})
	stop()
	vaultSeries := runVaultDaemon(t)

	got := normalize(ok, failed, vaultSeries)
	if *update {
		if err := os.WriteFile(goldenScrape, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := readGolden(t)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("atrestd's series differ from %s (run with -update and review the rules, their tests and the dashboard):\ngot:\n%s\nwant:\n%s",
			goldenScrape, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// runVaultDaemon runs atrestd (run 4) with a real Vault as its KMS and no
// volume, and returns a scrape once the Vault client's counters show its
// login.
func runVaultDaemon(t *testing.T) map[string]string {
	t.Helper()
	srv := vaulttest.Start(t)
	vn := vaulttest.Provision(t, srv, "scrapenode", nil)
	dir := t.TempDir()
	sock := filepath.Join(dir, "metrics.sock")
	path := filepath.Join(dir, "atrest.yaml")
	doc := fmt.Sprintf(`kms: vault-transit
vault:
  address: %[1]s
  ca_file: %[2]s
  auth:
    method: approle
    role_id: %[3]s
    secret_id_file: %[4]s
  transit:
    key: %[5]s
state_dir: %[6]s/state
recovery:
  mode: none
daemon:
  metrics: unix:%[7]s
  ready_timeout: 1s
  rescan: 1h
  require_discovered: false
`, srv.Address, srv.CAFile, vn.RoleID, vn.SecretIDFile, vn.Key, dir, sock)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	stop := runDaemon(t, path, dir)
	defer stop()
	var got map[string]string
	waitFor(t, sock, "the Vault client's requests", func(s map[string]string) bool {
		got = s
		return s["atrest_kms_vault_requests_total"] != "" && s["atrest_kms_vault_requests_total"] != "0"
	})
	return got
}

// runDaemon runs atrestd on cfg until the returned stop is called.
func runDaemon(t *testing.T, cfg, dir string) (stop func()) {
	t.Helper()
	d := daemon.New(daemon.Options{ConfigPath: cfg, RunDir: filepath.Join(dir, "run"), NoHotplug: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, make(chan struct{})) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("atrestd: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitFor scrapes sock until ok holds, for at most a minute.
func waitFor(t *testing.T, sock, what string, ok func(map[string]string) bool) {
	t.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	deadline := time.Now().Add(time.Minute)
	var s map[string]string
	for time.Now().Before(deadline) {
		if resp, err := c.Get("http://atrestd/metrics"); err == nil {
			s = parseScrape(resp.Body)
			resp.Body.Close()
			if ok(s) {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("atrestd's metrics never showed %s within a minute; last scrape:\n%v", what, s)
}

// parseScrape returns the atrest_ series of a text-format scrape, keyed
// by name and labels as printed, in a map and in order (key "#order").
func parseScrape(r io.Reader) map[string]string {
	s := map[string]string{}
	var order []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, "atrest_") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		s[l[:i]] = l[i+1:]
		order = append(order, l[:i])
	}
	s["#order"] = strings.Join(order, "\n")
	return s
}

func hasPrefix(s map[string]string, prefix string) bool {
	for k := range s {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

var uuidLabel = regexp.MustCompile(`volume="[0-9a-f-]{36}"`)

// normalize turns scrapes into golden lines, each series once: the
// scrape volume's series and every series without a name label, the
// UUID replaced.
func normalize(scrapes ...map[string]string) []string {
	var keys []string
	for _, s := range scrapes {
		keys = append(keys, strings.Split(s["#order"], "\n")...)
	}
	var out []string
	seen := map[string]bool{}
	for _, k := range keys {
		if strings.Contains(k, `name="`) && !strings.Contains(k, `name="`+scrapeVolume+`"`) {
			continue
		}
		k = uuidLabel.ReplaceAllString(k, `volume="<uuid>"`)
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

func readGolden(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(goldenScrape)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}
