package reencguest

import (
	"context"
	"encoding/json"
	"errors"
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
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/local"
	"github.com/atrest/atrest/pkg/token"
)

// platformSecretFile unwraps the platform secret of the atrest volume on
// dev with the node's local keystore, as an administrator handing the
// volume to cryptsetup would, into a private key file.
func (n *node) platformSecretFile(t *testing.T, dev string) string {
	t.Helper()
	var meta struct {
		Tokens map[string]json.RawMessage `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(guest.Run(t, "cryptsetup", "luksDump", "--dump-json-metadata", dev)), &meta); err != nil {
		t.Fatal(err)
	}
	var w kms.Wrapped
	for _, raw := range meta.Tokens {
		var typ struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(raw, &typ) == nil && typ.Type == token.Type {
			if err := json.Unmarshal(raw, &w); err != nil {
				t.Fatal(err)
			}
		}
	}
	ks, err := local.Open(filepath.Join(n.Dir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	uuid := strings.TrimSpace(guest.Run(t, "cryptsetup", "luksUUID", dev))
	res, err := ks.Unwrap(context.Background(), []kms.UnwrapRequest{{Context: uuid, Wrapped: w}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("unwrap the platform secret: %v %v", err, res)
	}
	defer res[0].Plaintext.Wipe()
	p := filepath.Join(t.TempDir(), "platform-secret")
	if err := os.WriteFile(p, res[0].Plaintext.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// stoppedBetweenHotzones checks what a run interrupted with SIGINT left:
// the re-encryption in the header, the helpers gone, the mapping a
// crypt table of the header's segments.
func stoppedBetweenHotzones(t *testing.T, who, name, dev, out string) {
	t.Helper()
	if _, types := luksDigests(t, dev); !strings.Contains(strings.Join(types, " "), "reencrypt") {
		t.Fatalf("%s finished before the interrupt (no reencrypt keyslot left): %s", who, out)
	}
	for _, h := range []string{name + "-overlay", name + "-hotzone-forward"} {
		if _, err := dmcrypt.Inspect(h); err == nil {
			t.Fatalf("%s interrupted left %s: %s", who, h, out)
		}
	}
	// Done and rest; the rest alone when the interrupt came before the
	// first hotzone was done.
	if m, err := dmcrypt.InspectCrypt(name); err != nil || m == nil || m.Targets > 2 {
		t.Fatalf("%s interrupted left /dev/mapper/%s as %+v (%v), want done and rest", who, name, m, err)
	}
}

// atrest's online run, interrupted (SIGINT) between hotzones, leaves the
// state cryptsetup leaves; `cryptsetup reencrypt --resume-only` on the
// active device finishes it with the platform secret, the writer going on,
// and atrest then settles its token; data and file system intact.
func TestCryptsetupResumesAtrestOnline(t *testing.T) {
	n := newNode(t)
	m := newMounted(t, n, "ona", 64)
	w := startWriter(m.dir)
	out, err := interrupt(t, n.cmd("reencrypt", "ona", "--hotzone-size", "1M"), "ona", syscall.SIGINT, rand.New(rand.NewPCG(3, 4)))
	if err == nil {
		t.Fatalf("atrest reencrypt was not interrupted: %s", out)
	}
	stoppedBetweenHotzones(t, "atrest", "ona", m.dev, out)
	kf := n.platformSecretFile(t, m.dev)
	guest.Run(t, "cryptsetup", "reencrypt", "--resume-only", "--batch-mode", "--key-file", kf, "--active-name", "ona", m.dev)
	r := parseReport(t, n.want("-o", "json", "reencrypt", "ona"))
	if !r.Volumes[0].Resumed {
		t.Fatalf("atrest after cryptsetup finished: %+v", r.Volumes[0])
	}
	m.verify(t, w)
}

// cryptsetup's online run on the volume it opened (with the platform
// secret), interrupted (SIGINT), is resumed by `atrest reencrypt` on the
// open, mounted volume; data and file system intact.
func TestAtrestResumesCryptsetupOnline(t *testing.T) {
	n := newNode(t)
	m := newMountedBy(t, n, "onb", 64, true)
	kf := n.platformSecretFile(t, m.dev)
	w := startWriter(m.dir)
	args := append([]string{"reencrypt", "--batch-mode", "--key-file", kf, "--hotzone-size", "1M", "--resilience", "checksum", "--active-name", "onb"}, guest.CheapKDF...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, _ := interrupt(t, exec.CommandContext(ctx, "cryptsetup", append(args, m.dev)...), "onb", syscall.SIGINT, rand.New(rand.NewPCG(5, 6)))
	stoppedBetweenHotzones(t, "cryptsetup", "onb", m.dev, out)
	r := parseReport(t, n.want("-o", "json", "reencrypt", "onb"))
	if !r.Volumes[0].Resumed {
		t.Fatalf("atrest did not resume cryptsetup's run: %+v", r.Volumes[0])
	}
	m.verify(t, w)
}

// cryptsetup refuses to resume what a killed (SIGKILL) online run left,
// its stack under the mapping; `atrest reencrypt --hand-over` takes the
// stack over, finishes the hotzone it held and stops in the state
// cryptsetup leaves between hotzones, which `cryptsetup reencrypt
// --resume-only --active-name` then finishes with the writer going on;
// data and file system intact.
func TestCryptsetupResumesAfterHandOver(t *testing.T) {
	n := newNode(t)
	m := newMounted(t, n, "onh", 48)
	w := startWriter(m.dir)
	handOverKilled(t, n, m, func(kf string) *exec.Cmd { return n.cmd("reencrypt", "onh", "--hotzone-size", "1M") }, rand.New(rand.NewPCG(7, 8)), true)
	m.verify(t, w)
}

// The same for cryptsetup's own online run killed: its stack (the same
// devices) is one cryptsetup refuses too, and atrest hands it back;
// cryptsetup's run ends with the atrest token bound to the new keyslot
// (its token assignment copy), so there is nothing for atrest to settle.
func TestCryptsetupResumesItsKilledRunAfterHandOver(t *testing.T) {
	n := newNode(t)
	m := newMountedBy(t, n, "onj", 48, true)
	w := startWriter(m.dir)
	handOverKilled(t, n, m, func(kf string) *exec.Cmd {
		args := append([]string{"reencrypt", "--batch-mode", "--key-file", kf, "--hotzone-size", "1M", "--resilience", "checksum", "--active-name", m.name}, guest.CheapKDF...)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		t.Cleanup(cancel)
		return exec.CommandContext(ctx, "cryptsetup", append(args, m.dev)...)
	}, rand.New(rand.NewPCG(9, 10)), false)
	m.verify(t, w)
}

// handOverKilled kills the online run run makes (given the platform
// secret's key file) with SIGKILL at a random moment, checks cryptsetup
// refuses to resume the stack left, hands it over with atrest reencrypt
// --hand-over, has cryptsetup finish it and, with settle, atrest settle
// the token of a run atrest started.
func handOverKilled(t *testing.T, n *node, m *mounted, run func(kf string) *exec.Cmd, rng *rand.Rand, settle bool) {
	t.Helper()
	kf := n.platformSecretFile(t, m.dev)
	killed := false
	for round := 0; round < 3 && !killed; round++ {
		_, err := interrupt(t, run(kf), m.name, syscall.SIGKILL, rng)
		var ee *exec.ExitError
		killed = errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
	}
	if !killed {
		t.Fatal("no kill landed during a run")
	}
	resume := []string{"reencrypt", "--resume-only", "--batch-mode", "--key-file", kf, "--active-name", m.name, m.dev}
	if st, err := dmcrypt.Inspect(m.name + "-hotzone-forward"); err == nil && st.Suspended {
		// cryptsetup would block in the kernel, unkillable, in a read
		// through the held hotzone (seen here: D state in
		// __blkdev_direct_IO_simple) until the hotzone is let through.
		t.Logf("after the kill the hotzone device holds I/O: cryptsetup is not asked before the hand-over")
	} else {
		out, err := guest.Try("cryptsetup", resume...)
		if err == nil {
			t.Fatalf("cryptsetup resumed a killed run's stack:\n%s", out)
		}
		t.Logf("after the kill (hotzone device not suspended) cryptsetup says: %s", strings.TrimSpace(out))
	}
	var r struct {
		Volumes []struct {
			Stopped bool `json:"stopped"`
		} `json:"volumes"`
	}
	stop := watchBlocked(t, "atrest reencrypt --hand-over")
	handed := n.want("-o", "json", "reencrypt", m.name, "--hand-over")
	stop()
	if err := json.Unmarshal([]byte(handed), &r); err != nil || len(r.Volumes) != 1 || !r.Volumes[0].Stopped {
		t.Fatalf("atrest reencrypt --hand-over: %v %+v", err, r)
	}
	stoppedBetweenHotzones(t, "atrest --hand-over", m.name, m.dev, "")
	guest.Run(t, "cryptsetup", resume...)
	if !settle {
		return
	}
	if r := parseReport(t, n.want("-o", "json", "reencrypt", m.name)); !r.Volumes[0].Resumed {
		t.Fatalf("atrest after cryptsetup finished: %+v", r.Volumes[0])
	}
}

// watchBlocked logs, once what is called step has taken 30 s, every
// process in uninterruptible sleep with its kernel stack; stop ends it.
func watchBlocked(t *testing.T, step string) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	var once sync.Once
	stop = func() { once.Do(func() { close(done) }); <-exited }
	// A test that fails in the step ends before stop: logging after the
	// end would panic the whole binary.
	t.Cleanup(stop)
	go func() {
		defer close(exited)
		select {
		case <-done:
			return
		case <-time.After(30 * time.Second):
		}
		procs, _ := filepath.Glob("/proc/[0-9]*/stat")
		for _, p := range procs {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			f := strings.Fields(string(b))
			if len(f) > 2 && f[2] == "D" {
				stack, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "stack"))
				cmd, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
				t.Logf("%s after 30 s: blocked: %s %s\n%s", step, f[1], strings.ReplaceAll(string(cmd), "\x00", " "), stack)
			}
		}
	}()
	return stop
}
