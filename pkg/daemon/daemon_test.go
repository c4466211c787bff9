package daemon

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/looptest"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/backends"
	"github.com/atrest/atrest/pkg/loop"
	"github.com/atrest/atrest/pkg/volume"
)

// node is a throw-away atrest configuration: a local keystore, state and
// lock directories, a metrics socket, and a notify socket standing in for
// systemd's, all under a temporary directory.
type node struct {
	t       *testing.T
	dir     string
	config  string
	notify  chan string
	metrics string
	// kms is the configuration's KMS part (a local keystore in dir if
	// empty).
	kms string
}

func newNode(t *testing.T, extra string) *node {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	n := &node{t: t, dir: dir, config: filepath.Join(dir, "atrest.yaml"), metrics: filepath.Join(dir, "metrics.sock")}
	n.write(extra)

	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	n.notify = make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.notify <- string(buf[:k])
		}
	}()
	return n
}

func (n *node) write(extra string) {
	n.t.Helper()
	kmsPart := n.kms
	if kmsPart == "" {
		kmsPart = fmt.Sprintf("kms: local\nlocal:\n  keystore: %s/kek\n", n.dir)
	}
	doc := fmt.Sprintf("%sstate_dir: %s/state\nrecovery:\n  mode: none\ndaemon:\n  metrics: unix:%s\n%s", kmsPart, n.dir, n.metrics, extra)
	if err := os.WriteFile(n.config, []byte(doc), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

// format makes an atrest volume in a fresh image file, then attaches it
// to a loop device: to the daemon, a disk that carries a volume appears
// (the kernel announces the loop device; the initramfs guest has no udev
// to announce later writes).
func (n *node) format(name string) *loop.Device {
	n.t.Helper()
	img := filepath.Join(n.t.TempDir(), name+".img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		n.t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		n.t.Fatal(err)
	}
	if _, err := n.manager().Format(context.Background(), volume.FormatOptions{Device: img, Name: name}); err != nil {
		n.t.Fatal(err)
	}
	dev, err := loop.Attach(img, loop.Options{})
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() {
		_, _ = n.manager().Close(context.Background(), name)
		_ = dev.Detach()
	})
	return dev
}

func (n *node) manager() *volume.Manager {
	n.t.Helper()
	cfg, err := config.Load(n.config)
	if err != nil {
		n.t.Fatal(err)
	}
	set, err := backends.Open(cfg, func(string) string { return "" })
	if err != nil {
		n.t.Fatal(err)
	}
	return volume.New(cfg, set, volume.WithRunDir(filepath.Join(n.dir, "run")))
}

// start runs a daemon until the test ends; it returns the daemon, the
// reload channel and a function that stops it and waits for Run's result.
// On the host, where other test packages attach and detach loop devices
// all the time, the hotplug listener stays off; the real-kernel guest runs
// one test at a time and keeps it on.
func (n *node) start() (*Daemon, chan struct{}, func() error) {
	n.t.Helper()
	d := New(Options{ConfigPath: n.config, RunDir: filepath.Join(n.dir, "run"), Logger: testLogger(n.t), NoHotplug: !testutil.InGuest()})
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, reload) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			n.t.Fatal("Run did not return 30s after its context ended")
			return nil
		}
	}
	n.t.Cleanup(func() { _ = stop() })
	return d, reload, stop
}

// await waits for a notify message containing all of want and returns it.
func (n *node) await(within time.Duration, want ...string) string {
	n.t.Helper()
	deadline := time.After(within)
	var seen []string
	for {
		select {
		case m := <-n.notify:
			seen = append(seen, m)
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(m, w)
			}
			if ok {
				return m
			}
		case <-deadline:
			n.t.Fatalf("no notify message with %q within %s; got:\n%s", want, within, strings.Join(seen, "\n---\n"))
		}
	}
}

// scrape reads the metrics endpoint and returns the atrest_ series.
func (n *node) scrape() map[string]string {
	n.t.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", n.metrics)
	}}}
	resp, err := c.Get("http://atrestd/metrics")
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "atrest_") {
			k, v, _ := strings.Cut(l, " ")
			out[k] = v
		}
	}
	return out
}

// testLogger sends the daemon's log to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// A required volume that never shows up holds readiness only until the
// ready timeout: then atrestd reports ready with a degraded status naming
// it, so boot goes on, and the metrics say so. SIGHUP rereads the
// configuration (a bad file is refused and the old one kept); SIGTERM ends
// Run cleanly.
func TestReadyTimeoutReloadAndStop(t *testing.T) {
	n := newNode(t, "  ready_timeout: 2s\n  rescan: 1h\n  require_discovered: false\nvolumes:\n  - name: gone\n    device: /dev/atrest-test-no-such-disk\n")
	d, reload, stop := n.start()
	start := time.Now()
	msg := n.await(20*time.Second, "READY=1")
	if !strings.Contains(msg, "STATUS=degraded:") || !strings.Contains(msg, "gone (missing)") {
		t.Errorf("READY message: %q", msg)
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("READY=1 after %s, before the 2s ready timeout, with a required volume missing", took)
	}
	m := n.scrape()
	if m[`atrest_volumes{state="missing"}`] != "1" || m["atrest_ready"] != "1" {
		t.Errorf("metrics: missing=%s ready=%s", m[`atrest_volumes{state="missing"}`], m["atrest_ready"])
	}

	// A broken file is refused; the running configuration stays.
	if err := os.WriteFile(n.config, []byte("kms: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	n.await(10*time.Second, "RELOADING=1")
	n.await(10*time.Second, "READY=1")
	if !hasVolume(d, "gone") {
		t.Error("a failed reload dropped the configured volume")
	}
	// A good file replaces it.
	n.write("  ready_timeout: 2s\n  rescan: 1h\n  require_discovered: false\n")
	reload <- struct{}{}
	n.await(10*time.Second, "RELOADING=1")
	n.await(10*time.Second, "READY=1")
	if hasVolume(d, "gone") {
		t.Error("after reloading a configuration without it, the volume is still tracked")
	}
	if err := stop(); err != nil {
		t.Fatalf("Run after SIGTERM: %v", err)
	}
	n.await(5*time.Second, "STOPPING=1")
}

func hasVolume(d *Daemon, name string) bool {
	for _, v := range d.Snapshot() {
		if v.Name == name {
			return true
		}
	}
	return false
}

// Volumes present at start are found by their token and opened in one
// batch: one KMS call for all of them. READY=1 follows. A volume that
// appears later is picked up from the kernel's uevent (the periodic
// rescan is an hour away). Stopping the daemon leaves them open.
func TestOpensAllInOneBatchAndPicksUpHotplug(t *testing.T) {
	testutil.RequireDeviceMapper(t)
	n := newNode(t, "  ready_timeout: 1m\n  rescan: 1h\n")
	for _, name := range []string{"dta", "dtb", "dtc"} {
		n.format(name)
	}
	d, _, stop := n.start()
	msg := n.await(60*time.Second, "READY=1")
	if !strings.Contains(msg, "STATUS=3/3 volumes open") {
		t.Fatalf("READY message: %q (state %+v)", msg, d.Snapshot())
	}
	for _, name := range []string{"dta", "dtb", "dtc"} {
		if _, err := os.Stat(dmcrypt.NodePath(name)); err != nil {
			t.Errorf("%s not mapped: %v", name, err)
		}
	}
	m := n.scrape()
	if got := m[`atrest_kms_request_duration_seconds_count{op="unwrap",result="ok"}`]; got != "1" {
		t.Errorf("KMS unwrap calls for 3 volumes: %s, want 1 batch", got)
	}
	if m["atrest_unlock_attempts_total"] != "3" || m[`atrest_volumes{state="open"}`] != "3" {
		t.Errorf("metrics: attempts %s, open %s", m["atrest_unlock_attempts_total"], m[`atrest_volumes{state="open"}`])
	}
	for _, name := range []string{"dta", "dtb", "dtc"} {
		if !strings.Contains(fmt.Sprint(m), `name="`+name+`"`) {
			t.Errorf("no last-rekey age for %s", name)
		}
	}

	n.format("dtd")
	n.await(30*time.Second, "STATUS=4/4 volumes open")
	if _, err := os.Stat(dmcrypt.NodePath("dtd")); err != nil {
		t.Errorf("the hot-plugged volume is not mapped: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"dta", "dtd"} {
		if _, err := os.Stat(dmcrypt.NodePath(name)); err != nil {
			t.Errorf("stopping atrestd closed %s", name)
		}
	}
}

// The KEK is unavailable at start: the ready timeout passes, atrestd
// reports ready and degraded with the reason, keeps retrying with
// backoff, and opens the volume as soon as the KEK is back.
func TestRetriesUntilTheKEKComesBack(t *testing.T) {
	testutil.RequireDeviceMapper(t)
	n := newNode(t, "  ready_timeout: 2s\n  retry_min: 200ms\n  retry_max: 500ms\n  rescan: 1h\n")
	n.format("dtk")
	kek := filepath.Join(n.dir, "kek")
	if err := os.Rename(kek, kek+".away"); err != nil {
		t.Fatal(err)
	}
	d, _, _ := n.start()
	msg := n.await(30*time.Second, "READY=1")
	if !strings.Contains(msg, "STATUS=degraded: 0/1 volumes open; not open: dtk (locked, kms key)") {
		t.Fatalf("READY with the KEK away: %q", msg)
	}
	time.Sleep(time.Second)
	m := n.scrape()
	if f, _ := strconv.Atoi(m[`atrest_unlock_failures_total{reason="kms_key"}`]); f < 2 {
		t.Errorf("failures after a second of retries: %s", m[`atrest_unlock_failures_total{reason="kms_key"}`])
	}
	if err := os.Rename(kek+".away", kek); err != nil {
		t.Fatal(err)
	}
	n.await(10*time.Second, "STATUS=1/1 volumes open")
	if _, err := os.Stat(dmcrypt.NodePath("dtk")); err != nil {
		t.Fatalf("not mapped after the KEK came back: %v (%+v)", err, d.Snapshot())
	}
}

// Provisioning: a configured blank device with format: true becomes an
// atrest volume when atrestd starts; a configured device that carries a
// file system is refused, named in the log, and left byte for byte as it
// was.
func TestProvisionsBlankDevicesOnly(t *testing.T) {
	n := newNode(t, "")
	testutil.RequireCommand(t, "mkfs.ext4", "e2fsprogs")
	blank := looptest.Disk(t, 32)
	used := looptest.Disk(t, 32)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", used.Path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	before := testutil.SHA256(t, used.Path)
	n.write(fmt.Sprintf("  ready_timeout: 2s\n  rescan: 1h\n  require_discovered: false\nvolumes:\n  - name: fresh\n    device: %s\n    format: true\n    required: false\n  - name: taken\n    device: %s\n    format: true\n    required: false\n", blank.Path, used.Path))
	d, _, stop := n.start()
	n.await(30*time.Second, "READY=1")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	v, err := n.manager().Find(context.Background(), blank.Path)
	if err != nil || !v.Managed() || v.Name != "fresh" {
		t.Fatalf("the blank device after atrestd started: %v %+v", err, v)
	}
	if len(v.Recovery) != 0 {
		t.Errorf("recovery mode none: the provisioned volume has recovery keyslots %v", v.Recovery)
	}
	if got := testutil.SHA256(t, used.Path); got != before {
		t.Fatal("atrestd changed a device that carries a file system")
	}
	found := false
	for _, s := range d.Snapshot() {
		if s.Name == "taken" {
			found = true
			if s.State != StateFailed || !strings.Contains(s.Error, "not formatted: "+used.Path+" already holds ext4") {
				t.Errorf("the refused device: %+v", s)
			}
		}
	}
	if !found {
		t.Error("the refused device is not tracked")
	}
}

// A token wrapped under an older KEK version is rewrapped to the newest by
// the periodic check (a second after start here), with the same keyslot.
func TestRewrapsStaleTokens(t *testing.T) {
	n := newNode(t, "  ready_timeout: 1s\n  rescan: 1h\n  rewrap: 1s\n  require_discovered: false\n")
	dev := n.format("dtr")
	ctx := context.Background()
	old, err := n.manager().Find(ctx, dev.Path)
	if err != nil {
		t.Fatal(err)
	}
	kek, err := n.manager().KMS().Wrapper()
	if err != nil {
		t.Fatal(err)
	}
	info, err := kek.(kms.Rotator).Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if old.Platform.KeyVersion >= info.LatestVersion {
		t.Fatalf("rotation: token version %d, latest %d", old.Platform.KeyVersion, info.LatestVersion)
	}
	_, _, stop := n.start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := n.manager().Find(ctx, dev.Path)
		if err != nil {
			t.Fatal(err)
		}
		if v.Platform.KeyVersion == info.LatestVersion {
			if v.Platform.Keyslot != old.Platform.Keyslot {
				t.Errorf("rewrap moved the platform keyslot %d → %d", old.Platform.Keyslot, v.Platform.Keyslot)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("token still at version %d 30s after start", v.Platform.KeyVersion)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
