package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/looptest"
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/volume"
)

// Delays double from min to max, each drawn from the upper half of the
// nominal delay, so a fleet does not retry in lock step; a success starts
// over from min.
func TestBackoffGrowsWithJitterAndResets(t *testing.T) {
	b := newBackoff(time.Second, 8*time.Second)
	for _, r := range []float64{0, 0.999} {
		b.Reset()
		b.rand = func() float64 { return r }
		var got []time.Duration
		for range 6 {
			got = append(got, b.Delay().Round(time.Millisecond))
		}
		want := []time.Duration{500, 1000, 2000, 4000, 4000, 4000}
		if r > 0.5 {
			want = []time.Duration{1000, 1999, 3998, 7996, 7996, 7996}
		}
		for i := range want {
			want[i] *= time.Millisecond
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("rand=%v: delays %v, want %v", r, got, want)
		}
	}
	b.Reset()
	b.rand = func() float64 { return 1 }
	if d := b.Delay(); d != time.Second {
		t.Errorf("after Reset the first delay is %s, want 1s", d)
	}
}

// Only block devices that are added or change trigger a rescan.
func TestBlockUeventParsing(t *testing.T) {
	msg := func(fields ...string) []byte { return []byte(strings.Join(fields, "\x00") + "\x00") }
	for _, tc := range []struct {
		msg  []byte
		want bool
	}{
		{msg("add@/devices/virtual/block/loop7", "ACTION=add", "DEVPATH=/devices/virtual/block/loop7", "SUBSYSTEM=block", "DEVNAME=loop7"), true},
		{msg("change@/devices/pci0000:00/virtio3/block/vdb", "ACTION=change", "SUBSYSTEM=block"), true},
		{msg("remove@/devices/virtual/block/loop7", "ACTION=remove", "SUBSYSTEM=block"), false},
		{msg("add@/devices/virtual/net/tap0", "ACTION=add", "SUBSYSTEM=net"), false},
		{msg("add@/module/dm_crypt", "ACTION=add", "SUBSYSTEM=module"), false},
		{[]byte("garbage"), false},
	} {
		if got := isBlockChange(tc.msg); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.msg, got, tc.want)
		}
	}
}

// Failures are named by the part that failed: what the metric's reason
// label and the status line show.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("unwrap: %w: dial tcp 127.0.0.1:8200: connection refused", kms.ErrUnavailable), "kms_unavailable"},
		{fmt.Errorf("x: %w", kms.ErrAuth), "kms_auth"},
		{fmt.Errorf("x: %w", kms.ErrPermissionDenied), "kms_auth"},
		{fmt.Errorf("x: %w", kms.ErrConfig), "kms_config"},
		{fmt.Errorf("x: %w", kms.ErrKeyNotFound), "kms_key"},
		{fmt.Errorf("x: %w", kms.ErrCiphertextRejected), "kms_key"},
		{fmt.Errorf("x: %w", luks2.ErrKeyRejected), "keyslot"},
		{fmt.Errorf("x: %w", dmcrypt.ErrNoDeviceMapper), "device"},
		{fmt.Errorf("x: %w", dmcrypt.ErrBackingBusy), "device"},
		{fmt.Errorf("x: %w", dmcrypt.ErrNoNode), "device"},
		{fmt.Errorf("x: %w", volume.ErrNotManaged), "not_managed"},
		{&volume.ReencryptingError{Ref: "data1", Done: 1 << 20, Total: 4 << 20}, "reencrypting"},
		{errors.New("something else"), "other"},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

// The status line says how many volumes are open and what each of the
// others waits for; only required ones hold readiness.
func TestSummary(t *testing.T) {
	vols := []VolumeState{
		{Name: "a", State: StateOpen, Required: true},
		{Name: "b", State: StateLocked, Reason: reasonKMSUnavailable, Required: true},
		{Name: "c", State: StateMissing, Required: false},
	}
	s := summarize(vols, time.Time{})
	if s.line != "1/3 volumes open; not open: b (locked, kms unavailable), c (missing)" || s.requiredWaiting != 1 {
		t.Errorf("summary %q waiting %d", s.line, s.requiredWaiting)
	}
	if s := summarize(vols[:1], time.Time{}); s.line != "1/1 volumes open" || s.requiredWaiting != 0 {
		t.Errorf("all open: %+v", s)
	}
	if s := summarize(nil, time.Time{}); s.line != "no atrest volumes found" {
		t.Errorf("none: %+v", s)
	}
	if s := summarize(vols[1:2], time.Now().Add(3*time.Second)); !strings.HasSuffix(s.line, "; next try in 3s") {
		t.Errorf("with a retry scheduled: %q", s.line)
	}
}

// listenUnix replaces only a socket nobody answers on; a file, a
// directory and a live socket are refused and left as they were.
func TestListenUnixReplacesOnlyStaleSockets(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(dir, "live.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	stale := filepath.Join(dir, "stale.sock")
	s, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	s.SetUnlinkOnClose(false)
	s.Close()

	for _, tc := range []struct{ path, refusal string }{
		{file, "is not a socket (a regular file)"},
		{dir, "is not a socket (a directory)"},
		{live, "a process answers on"},
		{stale, ""},
		{filepath.Join(dir, "new", "metrics.sock"), ""},
	} {
		ln, err := listenUnix(tc.path)
		if tc.refusal == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.path, err)
			} else {
				ln.Close()
			}
			continue
		}
		if err == nil {
			ln.Close()
			t.Errorf("%s: listened, want a refusal", tc.path)
		} else if !strings.Contains(err.Error(), tc.refusal) {
			t.Errorf("%s: %v, want %q", tc.path, err, tc.refusal)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "data" {
		t.Errorf("the regular file afterwards: %q, %v", b, err)
	}
	if c, err := net.Dial("unix", live); err != nil {
		t.Errorf("the live socket afterwards: %v", err)
	} else {
		c.Close()
	}
}

// The uevent listener ends when its context does: atrestd's reader was
// once blocked in recvfrom for ever, a goroutine and a netlink socket
// left behind by every Run.
func TestBlockEventsStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	_, done, err := blockEvents(ctx)
	if err != nil {
		t.Skipf("no netlink uevent socket here: %v", err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the uevent listener still runs 10s after its context ended")
	}
}

// The listener, reading through the runtime's poller, still hears the
// kernel: attaching a loop device is announced.
func TestBlockEventsHearsALoopDevice(t *testing.T) {
	testutil.RequireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, done, err := blockEvents(ctx)
	if err != nil {
		t.Skipf("no netlink uevent socket here: %v", err)
	}
	looptest.Disk(t, 1)
	select {
	case <-events:
	case <-time.After(10 * time.Second):
		t.Fatal("no block uevent within 10s of attaching a loop device")
	}
	cancel()
	<-done
}

// On a machine with many volumes the status line stays one readable
// line: the first few that are not open (required ones first), then a
// count of the rest.
func TestSummaryOfManyVolumes(t *testing.T) {
	var vols []VolumeState
	vols = append(vols, VolumeState{Name: "v000", State: StateOpen}, VolumeState{Name: "v001", State: StateOpen})
	for i := 2; i < 168; i++ {
		vols = append(vols, VolumeState{Name: fmt.Sprintf("v%03d", i), State: StateLocked, Reason: reasonKMSUnavailable, Required: i == 100})
	}
	s := summarize(vols, time.Time{})
	want := "2/168 volumes open; not open: v100 (locked, kms unavailable), v002 (locked, kms unavailable), v003 (locked, kms unavailable), v004 (locked, kms unavailable), v005 (locked, kms unavailable), and 161 more"
	if s.line != want || s.requiredWaiting != 1 {
		t.Errorf("168 volumes, 166 not open:\n%q (required waiting %d)\nwant\n%q", s.line, s.requiredWaiting, want)
	}
}
