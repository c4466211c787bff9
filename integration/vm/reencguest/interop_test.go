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
	ks, err := local.Open(filepath.Join(n.dir, "kek"))
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
	kf := n.platformSecretFile(t, m.dev)
	w := startWriter(m.dir)
	rng := rand.New(rand.NewPCG(7, 8))
	killed := false
	for round := 0; round < 3 && !killed; round++ {
		_, err := interrupt(t, n.cmd("reencrypt", "onh", "--hotzone-size", "1M"), "onh", syscall.SIGKILL, rng)
		var ee *exec.ExitError
		killed = errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
	}
	if !killed {
		t.Fatal("no kill landed during a run")
	}
	held := "not suspended"
	if st, err := dmcrypt.Inspect("onh-hotzone-forward"); err == nil && st.Suspended {
		held = "suspended"
	}
	resume := []string{"reencrypt", "--resume-only", "--batch-mode", "--key-file", kf, "--active-name", "onh", m.dev}
	out, err := guest.Try("cryptsetup", resume...)
	if err == nil {
		t.Fatalf("cryptsetup resumed a killed run's stack (hotzone device %s):\n%s", held, out)
	}
	t.Logf("after the kill (hotzone device %s) cryptsetup says: %s", held, strings.TrimSpace(out))
	var r struct {
		Volumes []struct {
			Stopped bool `json:"stopped"`
		} `json:"volumes"`
	}
	if err := json.Unmarshal([]byte(n.want("-o", "json", "reencrypt", "onh", "--hand-over")), &r); err != nil || len(r.Volumes) != 1 || !r.Volumes[0].Stopped {
		t.Fatalf("atrest reencrypt --hand-over: %v %+v", err, r)
	}
	stoppedBetweenHotzones(t, "atrest --hand-over", "onh", m.dev, "")
	guest.Run(t, "cryptsetup", resume...)
	if r := parseReport(t, n.want("-o", "json", "reencrypt", "onh")); !r.Volumes[0].Resumed {
		t.Fatalf("atrest after cryptsetup finished: %+v", r.Volumes[0])
	}
	m.verify(t, w)
}
