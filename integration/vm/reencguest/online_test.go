package reencguest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/atrest/atrest/integration/vm/guest"
	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/dmcrypt"
)

const atrest = guest.AtrestBinary

// cryptsetupKey starts the keyring description of a LUKS2 segment's key
// as cryptsetup names it, which an online run keeps.
const cryptsetupKey = "cryptsetup:"

// node is an atrest setup with the local keystore and no recovery key.
type node struct {
	*guest.Atrest
	t *testing.T
}

func newNode(t *testing.T) *node {
	t.Helper()
	testutil.RequireDeviceMapper(t)
	testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	testutil.RequireCommand(t, "e2fsck", "e2fsprogs")
	return &node{guest.NewAtrest(t, "none"), t}
}

// cmd is atrest with n's configuration; a run that hangs is killed after
// three minutes (and fails the test that waits for it).
func (n *node) cmd(args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	n.t.Cleanup(cancel)
	return exec.CommandContext(ctx, atrest, n.Args(args...)...)
}

// want runs atrest and fails the test unless it exits 0; it returns
// standard output.
func (n *node) want(args ...string) string {
	n.t.Helper()
	var out, errb bytes.Buffer
	c := n.cmd(args...)
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		n.t.Fatalf("atrest %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// mounted is an atrest volume, open and mounted, holding a file tree.
type mounted struct {
	n         *node
	dev, name string
	dir       string
	tree      map[string][32]byte // sha256 by path under dir
}

func newMounted(t *testing.T, n *node, name string, sizeMiB int64) *mounted {
	return newMountedBy(t, n, name, sizeMiB, false)
}

// newMountedBy is newMounted with the volume opened by cryptsetup (with
// the platform secret) instead of atrest when byCryptsetup is set.
func newMountedBy(t *testing.T, n *node, name string, sizeMiB int64, byCryptsetup bool) *mounted {
	t.Helper()
	m := &mounted{n: n, dev: guest.Disk(t, sizeMiB).Path, name: name}
	n.want("format", m.dev, "--name", name)
	if byCryptsetup {
		guest.Run(t, "cryptsetup", "open", "--key-file", n.platformSecretFile(t, m.dev), m.dev, name)
	} else {
		n.want("open", name)
	}
	t.Cleanup(func() { _ = n.cmd("close", name).Run() })
	guest.Mkfs(t, "/dev/mapper/"+name)
	m.dir = guest.Mount(t, "/dev/mapper/"+name)
	m.tree = map[string][32]byte{}
	rng := rand.New(rand.NewPCG(uint64(sizeMiB), 17))
	for i := 0; i < 60; i++ {
		p := filepath.Join(m.dir, fmt.Sprintf("d%d", i%6), fmt.Sprintf("f%02d", i))
		b := make([]byte, 4096+rng.IntN(384<<10))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		m.tree[strings.TrimPrefix(p, m.dir+"/")] = sha256.Sum256(b)
	}
	guest.Run(t, "sync")
	return m
}

// checkTree compares every file's sha256 with the one written.
func (m *mounted) checkTree(t *testing.T) {
	t.Helper()
	for rel, sum := range m.tree {
		p := filepath.Join(m.dir, rel)
		b, err := os.ReadFile(p)
		if err != nil || sha256.Sum256(b) != sum {
			ls, _ := guest.Try("ls", "-la", m.dir, filepath.Dir(p))
			mounts, _ := os.ReadFile("/proc/mounts")
			dmesg, _ := guest.Try("dmesg")
			t.Fatalf("%s changed (err %v)\n%s\n%s\n%s", p, err, ls, mounts, lastLines(dmesg, 30))
		}
	}
}

// writer writes 64 KiB records to a file with fsync, round the file's
// ring of slots records, and creates and removes small files until
// stopped, as an application would while the volume is re-encrypted.
type writer struct {
	stop    chan struct{}
	done    chan error
	path    string
	mu      sync.Mutex
	records int
}

// slots bounds the writer's file (8 MiB), so it never fills the volume.
const slots = 128

func record(i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("record %08d\n", i)), 64<<10/16)
}

func startWriter(dir string) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan error, 1), path: filepath.Join(dir, "writer.log")}
	go func() {
		f, err := os.OpenFile(w.path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
		if err != nil {
			w.done <- err
			return
		}
		defer f.Close()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				w.done <- nil
				return
			default:
			}
			if _, err := f.WriteAt(record(i), int64(i%slots)*(64<<10)); err != nil {
				w.done <- err
				return
			}
			if err := f.Sync(); err != nil {
				w.done <- err
				return
			}
			small := filepath.Join(dir, fmt.Sprintf("small%d", i%8))
			if err := os.WriteFile(small, record(i)[:4096], 0o644); err != nil {
				w.done <- err
				return
			}
			if i%3 == 0 {
				if err := os.Remove(small); err != nil {
					w.done <- err
					return
				}
			}
			w.mu.Lock()
			w.records = i + 1
			w.mu.Unlock()
		}
	}()
	return w
}

// finish stops the writer and checks it saw no error and that what it
// wrote reads back.
func (w *writer) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	if err := <-w.done; err != nil {
		t.Fatalf("the writer saw an error: %v", err)
	}
	b, err := os.ReadFile(w.path)
	if err != nil {
		t.Fatal(err)
	}
	if w.records == 0 || len(b) < min(w.records, slots)*(64<<10) {
		t.Fatalf("the writer's file has %d bytes after %d records", len(b), w.records)
	}
	for j := 0; j < min(w.records, slots); j++ {
		i := j + slots*((w.records-1-j)/slots) // the last record written to slot j
		if !bytes.Equal(b[j*(64<<10):(j+1)*(64<<10)], record(i)) {
			t.Fatalf("slot %d of the writer's file does not hold record %d, the last written there", j, i)
		}
	}
	t.Logf("the writer wrote %d records (%d MiB) during the run", w.records, w.records/16)
}

// luksDigests is the header's digests as luksDump shows them; a new
// volume key has a new digest.
func luksDigests(t *testing.T, dev string) (digests string, keyslotTypes []string) {
	t.Helper()
	var meta struct {
		Keyslots map[string]struct {
			Type string `json:"type"`
		} `json:"keyslots"`
		Digests  map[string]json.RawMessage `json:"digests"`
		Segments map[string]json.RawMessage `json:"segments"`
	}
	if err := json.Unmarshal([]byte(guest.Run(t, "cryptsetup", "luksDump", "--dump-json-metadata", dev)), &meta); err != nil {
		t.Fatal(err)
	}
	for _, k := range meta.Keyslots {
		keyslotTypes = append(keyslotTypes, k.Type)
	}
	b, _ := json.Marshal(meta.Digests)
	return string(b), keyslotTypes
}

// checkSettled: the mapping is one crypt target under a keyring key
// whose description starts with keyDesc (an online run leaves cryptsetup's
// naming, see pkg/dmcrypt Stack), no helper device is left, the header
// has no re-encryption.
func (m *mounted) checkSettled(t *testing.T, keyDesc string) {
	t.Helper()
	lines, err := dmcrypt.TableLines(m.name)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || !strings.Contains(lines[0], " crypt aes-xts-plain64 :64:logon:"+keyDesc) || !strings.HasSuffix(lines[0], "sector_size:4096") {
		t.Fatalf("/dev/mapper/%s after the re-encryption: %v", m.name, lines)
	}
	for _, h := range []string{m.name + "-overlay", m.name + "-hotzone-forward"} {
		if _, err := dmcrypt.Inspect(h); err == nil {
			t.Fatalf("%s left after the re-encryption", h)
		}
	}
	if _, types := luksDigests(t, m.dev); strings.Contains(strings.Join(types, " "), "reencrypt") {
		t.Fatalf("the header still has a reencrypt keyslot: %v", types)
	}
}

// verify is what a user checks after a re-encryption with the writer w
// running: the writer saw no error and its file reads back, the volume is
// settled, the tree is intact, e2fsck is clean and the volume reopens.
func (m *mounted) verify(t *testing.T, w *writer) {
	t.Helper()
	w.finish(t)
	m.checkSettled(t, cryptsetupKey)
	m.checkTree(t)
	m.fsckAndReopen(t)
}

// fsckAndReopen unmounts, checks the file system, closes and reopens the
// volume with atrest (the new key, from the new header) and checks the
// tree again.
func (m *mounted) fsckAndReopen(t *testing.T) {
	t.Helper()
	guest.Unmount(t, m.dir)
	if out, err := guest.Try("e2fsck", "-fn", "/dev/mapper/"+m.name); err != nil {
		t.Fatalf("e2fsck after the re-encryption: %v\n%s", err, out)
	}
	m.n.want("close", m.name)
	m.n.want("open", m.name)
	m.dir = guest.Mount(t, "/dev/mapper/"+m.name)
	m.checkTree(t)
}

type report struct {
	Volumes []struct {
		Name    string  `json:"name"`
		Bytes   uint64  `json:"bytes"`
		Seconds float64 `json:"seconds"`
		Resumed bool    `json:"resumed"`
	} `json:"volumes"`
}

func parseReport(t *testing.T, out string) report {
	t.Helper()
	var r report
	if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.Volumes) != 1 {
		t.Fatalf("reencrypt -o json: %v\n%s", err, out)
	}
	return r
}

// A mounted ext4 volume with a file tree and a writer running is
// re-encrypted online: the writer sees no error, the tree and the
// writer's file read back, the mapping ends as one crypt target under the
// new key, e2fsck finds nothing, and the volume reopens under the new
// header.
//
// While it runs, cryptsetup's re-encryption lock is held:
// `cryptsetup reencrypt --resume-only` is refused.
func TestOnlineReencryptMountedWithWriter(t *testing.T) {
	n := newNode(t)
	m := newMounted(t, n, "onl", 96)
	kf := n.platformSecretFile(t, m.dev)
	before, _ := luksDigests(t, m.dev)
	w := startWriter(m.dir)
	time.Sleep(200 * time.Millisecond)
	var out, errb bytes.Buffer
	run := n.cmd("-o", "json", "reencrypt", "onl", "--hotzone-size", "4M")
	run.Stdout, run.Stderr = &out, &errb
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if _, err := dmcrypt.Inspect("onl-overlay"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = run.Process.Kill()
			t.Fatalf("no online stack within a minute: %s", errb.String())
		}
	}
	// cryptsetup reads the header before it takes the lock: caught
	// between atrest's writes of the two header copies it refuses as a
	// concurrent metadata update instead (nothing changed either way);
	// asked again, it must meet the lock.
	var cs string
	var err error
	for range 50 {
		cs, err = guest.Try("cryptsetup", "reencrypt", "--resume-only", "--batch-mode", "--key-file", kf, "--active-name", "onl", m.dev)
		if err == nil || !strings.Contains(cs, "concurrent LUKS2 metadata update") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// atrest's run ends first either way: a test that stops while it
	// holds a hotzone would leave the file system's I/O held.
	werr := run.Wait()
	if err == nil || !strings.Contains(cs, "already running") {
		t.Fatalf("cryptsetup reencrypt --resume-only while atrest runs online: %v, want refused as already running:\n%s", err, cs)
	}
	if werr != nil {
		t.Fatalf("atrest reencrypt: %v\n%s", werr, errb.String())
	}
	r := parseReport(t, out.String())
	if v := r.Volumes[0]; v.Resumed || v.Bytes == 0 {
		t.Fatalf("report: %+v", v)
	}
	if after, _ := luksDigests(t, m.dev); after == before {
		t.Fatal("the header's key digest did not change: no new volume key")
	}
	m.verify(t, w)
}

// atrest reencrypt killed (SIGKILL) at random points of an online run,
// some while a hotzone's I/O is held: each time the header stays readable
// for cryptsetup and the next run resumes; the writer, held at most while
// no run is going, sees no error.
func TestOnlineReencryptKilledResumes(t *testing.T) {
	n := newNode(t)
	m := newMounted(t, n, "onk", 64)
	w := startWriter(m.dir)
	rng := rand.New(rand.NewPCG(1, 2))
	kills, lastKilled := 0, false
	for round := 0; round < 4 && kills < 3; round++ {
		out, err := interrupt(t, n.cmd("reencrypt", "onk", "--hotzone-size", "1M"), "onk", syscall.SIGKILL, rng)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Logf("round %d: the run ended before the kill (%v): %s", round, err, out)
			lastKilled = false
			continue
		}
		kills, lastKilled = kills+1, true
		if _, err := guest.Try("cryptsetup", "luksDump", m.dev); err != nil {
			t.Fatalf("after kill %d cryptsetup cannot read the header: %v", kills, err)
		}
		lo := "no helper devices"
		if st, err := dmcrypt.Inspect("onk-hotzone-forward"); err == nil {
			lo = fmt.Sprintf("hotzone device suspended: %v", st.Suspended)
		}
		t.Logf("kill %d: %s", kills, lo)
	}
	if kills == 0 {
		t.Fatal("no kill landed during a run")
	}
	r := parseReport(t, n.want("-o", "json", "reencrypt", "onk"))
	if r.Volumes[0].Resumed != lastKilled {
		t.Fatalf("the last run resumed %v after a killed run %v: %+v", r.Volumes[0].Resumed, lastKilled, r.Volumes[0])
	}
	t.Logf("%d kills, each resumed", kills)
	m.verify(t, w)
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// interrupt starts c, a re-encryption of the open volume name, and sends
// it sig a random moment (up to 400 ms) after its device stack is up; it
// returns what c printed and how it ended.
func interrupt(t *testing.T, c *exec.Cmd, name string, sig os.Signal, rng *rand.Rand) (string, error) {
	t.Helper()
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if _, err := dmcrypt.Inspect(name + "-overlay"); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
	_ = c.Process.Signal(sig)
	err := <-exited
	return out.String(), err
}
