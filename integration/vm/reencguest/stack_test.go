package reencguest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/integration/vm/guest"
	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/dmcrypt"
)

// snapshot is the stack's tables at one moment of a run.
type snapshot struct{ top, overlay, hotzone []string }

// cryptsetup's online re-encryption, watched while it runs: the tables it
// loads into NAME, NAME-overlay and NAME-hotzone-forward, and NAME's at
// the end, are the ones pkg/dmcrypt builds for the same state.
func TestStackMatchesCryptsetup(t *testing.T) {
	testutil.RequireDeviceMapper(t)
	testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	d := guest.Disk(t, 40)
	kf := guest.KeyFile(t, []byte("online stack"))
	guest.LUKSFormat(t, d.Path, kf)
	seg := guest.LUKSSegment(t, d.Path)
	guest.Run(t, "cryptsetup", "open", "--key-file", kf, d.Path, "csr")
	t.Cleanup(func() { _, _ = guest.Try("cryptsetup", "close", "csr") })
	backing, devBytes := backingOf(t, d.Path)
	hex := strings.ReplaceAll(seg.UUID, "-", "")

	args := append([]string{"reencrypt", "--batch-mode", "--key-file", kf, "--hotzone-size", "1M", "--resilience", "checksum", "--active-name", "csr"}, guest.CheapKDF...)
	cmd := exec.Command("cryptsetup", append(args, d.Path)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var first, middle *snapshot
	var hzDev, ovDev string
	var uuids []string
	for running := true; running; {
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("cryptsetup reencrypt: %v\n%s", err, out.String())
			}
			running = false
			continue
		default:
		}
		ov, err1 := dmcrypt.TableLines("csr-overlay")
		hz, err2 := dmcrypt.TableLines("csr-hotzone-forward")
		top, err3 := dmcrypt.TableLines("csr")
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		if hzDev == "" {
			o, err1 := dmcrypt.Inspect("csr-overlay")
			h, err2 := dmcrypt.Inspect("csr-hotzone-forward")
			if err1 != nil || err2 != nil {
				continue
			}
			ovDev, hzDev = fmt.Sprintf("%d:%d", o.Major, o.Minor), fmt.Sprintf("%d:%d", h.Major, h.Minor)
			uuids = []string{o.UUID, h.UUID}
		}
		s := &snapshot{top, ov, hz}
		switch {
		case first == nil && len(ov) == 2 && strings.Contains(ov[0], " "+hzDev+" "):
			first = s
		case middle == nil && len(ov) == 3 && strings.Contains(ov[1], " "+hzDev+" "):
			middle = s
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("cryptsetup: %s", strings.TrimSpace(out.String()))
	if middle == nil {
		t.Fatal("never saw cryptsetup's overlay with a hotzone between the part done and the rest")
	}

	size := (devBytes - seg.Offset) / 512
	data := seg.Offset / 512
	if want := []string{"CRYPT-SUBDEV-" + hex + "-csr-overlay", "CRYPT-SUBDEV-" + hex + "-csr-hotzone-forward"}; strings.Join(uuids, " ") != strings.Join(want, " ") {
		t.Errorf("helper dm UUIDs %v, want %v", uuids, want)
	}
	ref := func(s dmcrypt.ReencryptSegment) string {
		return fmt.Sprintf(":64:logon:cryptsetup:%s-d%d", seg.UUID, s.KeyID)
	}
	layout := func(done, hot uint64) []dmcrypt.ReencryptSegment {
		var segs []dmcrypt.ReencryptSegment
		add := func(off, n uint64, id int, hz bool) {
			segs = append(segs, dmcrypt.ReencryptSegment{OffsetSectors: data + off, Sectors: n, IVOffset: off, SectorSize: seg.SectorSize, KeyID: id, Hotzone: hz})
		}
		if done > 0 {
			add(0, done, 1, false)
		}
		if hot > 0 {
			add(done, hot, 1, true)
		}
		if done+hot < size {
			add(done+hot, 0, 0, false)
		}
		return segs
	}
	want := func(segs []dmcrypt.ReencryptSegment, hz string) string {
		lines, err := dmcrypt.OverlayTable(segs, size, data, backing, hz, 0, ref)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, l := range lines {
			s = append(s, l.String())
		}
		return strings.Join(s, "\n")
	}
	check := func(what string, s *snapshot, done, hot uint64) {
		t.Helper()
		if got, w := strings.Join(s.overlay, "\n"), want(layout(done, hot), hzDev); got != w {
			t.Errorf("%s: cryptsetup's overlay:\n%s\npkg/dmcrypt's:\n%s", what, got, w)
		}
		if got, w := strings.Join(s.top, "\n"), fmt.Sprintf("0 %d linear %s 0", size, ovDev); got != w {
			t.Errorf("%s: cryptsetup's csr: %s, want %s", what, got, w)
		}
		if got, w := strings.Join(s.hotzone, "\n"), fmt.Sprintf("0 %d linear %s %d", size, backing, data); got != w {
			t.Errorf("%s: cryptsetup's hotzone device: %s, want %s", what, got, w)
		}
	}
	if first != nil {
		check("first hotzone", first, 0, lengthOf(t, first.overlay[0]))
	} else {
		t.Log("the first hotzone went by unseen")
	}
	check("a later hotzone", middle, lengthOf(t, middle.overlay[0]), lengthOf(t, middle.overlay[1]))

	final, err := dmcrypt.TableLines("csr")
	if err != nil {
		t.Fatal(err)
	}
	if got, w := strings.Join(final, "\n"), want(layout(size, 0), ""); got != w {
		t.Errorf("csr after the run: %s\nwant %s", got, w)
	}
	for _, n := range []string{"csr-overlay", "csr-hotzone-forward"} {
		if _, err := dmcrypt.Inspect(n); err == nil {
			t.Errorf("%s left after the run", n)
		}
	}
}

func lengthOf(t *testing.T, line string) uint64 {
	t.Helper()
	var start, n uint64
	if _, err := fmt.Sscan(line, &start, &n); err != nil {
		t.Fatalf("table line %q: %v", line, err)
	}
	return n
}

// backingOf returns how tables name the block device at path, and its
// size in bytes.
func backingOf(t *testing.T, path string) (string, uint64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, n, err := dmcrypt.BackingDevice(f)
	if err != nil {
		t.Fatal(err)
	}
	return d, n
}
