package cli

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/xts"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/local"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/token"
)

var recoveryKeyRE = regexp.MustCompile(`[cbdefghijklnrtuv]{8}(-[cbdefghijklnrtuv]{8}){7}`)

// volumeKeyOf is the volume key cryptsetup dumps with the recovery key.
func volumeKeyOf(t *testing.T, dev, recovery string) []byte {
	t.Helper()
	return volumeKeyOfFile(t, dev, keyFile(t, recovery))
}

// dataXTS encrypts plain into the data area (after the 16 MiB header) of
// dev, or with plain nil decrypts the data area's first size bytes, as
// dm-crypt would (aes-xts-plain64, 4096-byte sectors).
func dataXTS(t *testing.T, dev string, vk, plain []byte) []byte {
	return dataXTSSize(t, dev, vk, plain, 32<<20)
}

func dataXTSSize(t *testing.T, dev string, vk, plain []byte, size int) []byte {
	t.Helper()
	c, err := xts.NewCipher(aes.NewCipher, vk)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, size)
	if plain != nil {
		for s := 0; s < len(buf); s += 4096 {
			c.Encrypt(buf[s:s+4096], plain[s:s+4096], uint64(s/512))
		}
		if _, err := f.WriteAt(buf, 16<<20); err != nil {
			t.Fatal(err)
		}
		return nil
	}
	if _, err := f.ReadAt(buf, 16<<20); err != nil {
		t.Fatal(err)
	}
	for s := 0; s < len(buf); s += 4096 {
		c.Decrypt(buf[s:s+4096], buf[s:s+4096], uint64(s/512))
	}
	return buf
}

// killed is a volume re-encryption killed right after its start.
type killed struct {
	oldVK, plain   []byte
	oldRec, newRec string
}

// killedAfterStart formats dev as name (recovery keys printed), plants 32
// MiB of random plaintext, and runs atrest reencrypt with the failpoint
// that ends the process (exit 137) right after the volume went into
// re-encryption; it returns the old key, the plaintext and the old and new
// recovery keys.
func killedAfterStart(t *testing.T, n *node, dev, name string) killed {
	t.Helper()
	f := jsonOf[formatJSON](t, n.ok("-o", "json", "format", dev, "--name", name))
	k := killed{oldVK: volumeKeyOf(t, dev, f.Recovery.Key), plain: make([]byte, 32<<20), oldRec: f.Recovery.Key}
	rand.Read(k.plain)
	dataXTS(t, dev, k.oldVK, k.plain)
	n.env = []string{"ATREST_FAILPOINT=reencrypt-after-start"}
	r := n.run(nil, "reencrypt", name)
	n.env = nil
	if r.code != 137 {
		t.Fatalf("the failpoint did not end the run: %s", r)
	}
	if k.newRec = recoveryKeyRE.FindString(r.stdout); k.newRec == "" || k.newRec == k.oldRec {
		t.Fatalf("the killed run printed no new recovery key: %s", r)
	}
	return k
}

// An atrest reencrypt killed right after it put the volume into
// re-encryption (the process exits 137): cryptsetup sees the state, the
// next atrest reencrypt resumes and finishes it, status is healthy, the
// recovery key printed by the killed run opens the volume and dumps a new
// volume key under which the data reads as before.
func TestReencryptKilledResumes(t *testing.T) {
	n := localNode(t, "print")
	dev := disk(t, 48)
	k := killedAfterStart(t, n, dev, "cut1")
	oldVK, plain, newRec := k.oldVK, k.plain, k.newRec
	if dump := sh(t, "cryptsetup", "luksDump", dev); !strings.Contains(dump, "online-reencrypt-v2") {
		t.Fatalf("not in re-encryption:\n%s", dump)
	}
	// open refuses it with its own code, the progress and the command.
	if r := n.run(nil, "open", "cut1"); r.code != 21 || !strings.Contains(r.stderr, "0 of 33554432 bytes done") || !strings.Contains(r.stderr, "atrest reencrypt cut1") {
		t.Fatalf("open of a volume in re-encryption: %s", r)
	}
	if out := n.ok("reencrypt", "cut1").stdout; !strings.Contains(out, "cut1: resumed a re-encryption") {
		t.Fatalf("the second run did not resume: %s", out)
	}
	n.ok("status", "cut1")
	if !cryptsetupAccepts(t, dev, newRec) || cryptsetupAccepts(t, dev, k.oldRec) {
		t.Fatal("want the new recovery key to open the volume, the old not")
	}
	newVK := volumeKeyOf(t, dev, newRec)
	if bytes.Equal(newVK, oldVK) {
		t.Fatal("the volume key did not change")
	}
	if !bytes.Equal(dataXTS(t, dev, newVK, nil), plain) {
		t.Fatal("plaintext changed")
	}
}

// atrest reencrypt killed (SIGKILL) at random points of its data pass:
// each seed picks the hotzone and a delay after the header shows it, so
// the kill lands before, inside or after a hotzone's data write. Each
// state passes cryptsetup luksDump; a copy on a second loop device is
// finished by cryptsetup (repair, reencrypt --resume-only, with the
// platform secret unwrapped from the local keystore as a KMS would), the
// original by the next atrest reencrypt; both give the original plaintext
// (sha256) under a new volume key.
//
// On a fast machine a kill may land after the last hotzone, the header
// already finished (64 MiB written in under 47 ms here): then the volume
// must be the finished one, and at least one seed must still have landed
// inside the re-encryption, or nothing was resumed at all.
func TestReencryptKilledAtRandomPoints(t *testing.T) {
	const data = 128 << 20
	inside := 0
	defer func() {
		if !t.Failed() && inside == 0 {
			t.Error("no seed's kill landed inside the re-encryption: nothing was resumed")
		}
	}()
	for _, seed := range []int64{1, 2, 3, 4} {
		t.Run(fmt.Sprint("seed-", seed), func(t *testing.T) {
			rng := mrand.New(mrand.NewSource(seed))
			// The header shows a clean state (the next hotzone is being
			// read) or the hotzone flagged (its data is being written).
			after := uint64(rng.Intn(data/luks2.DefaultHotzone)) * luks2.DefaultHotzone
			inHotzone := rng.Intn(2) == 1
			delay := time.Duration(rng.Intn(100)) * time.Millisecond
			n := localNode(t, "print")
			dev := disk(t, 16+data>>20)
			f := jsonOf[formatJSON](t, n.ok("-o", "json", "format", dev, "--name", fmt.Sprint("kill", seed)))
			oldVK := volumeKeyOf(t, dev, f.Recovery.Key)
			plain := make([]byte, data)
			rand.Read(plain)
			want := sha256.Sum256(plain)
			dataXTSSize(t, dev, oldVK, plain, data)

			cmd := exec.Command(atrestBinary(t), "-c", n.config, "reencrypt", dev)
			var out bytes.Buffer
			cmd.Stdout = &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			var err error
		poll:
			for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				select {
				case err = <-exited:
					break poll
				default:
				}
				if st := reencryptionOf(t, dev); st != nil && st.Done >= after && (!inHotzone || st.Hotzone > 0) {
					time.Sleep(delay)
					cmd.Process.Signal(syscall.SIGKILL)
					err = <-exited
					break
				}
			}
			if err == nil {
				t.Fatalf("the run finished before the kill (after %d bytes + %s)", after, delay)
			}
			newRec := recoveryKeyRE.FindString(out.String())
			if newRec == "" {
				t.Fatalf("no recovery key printed: %s", out.String())
			}
			st := reencryptionOf(t, dev)
			if st == nil {
				// Past the last hotzone: nothing to resume, and nothing lost.
				// A kill before the header backup's refresh leaves it stale,
				// and status says so and what to run.
				t.Logf("killed %s after the header showed %d bytes done (hotzone flagged: %v): the re-encryption had finished (%v)", delay, after, inHotzone, err)
				if r := n.run(nil, "status", dev); r.code == 3 && strings.Contains(r.stdout, "header backup is older than the header; run: atrest header backup") {
					n.ok("header", "backup", dev)
				} else if r.code != 0 {
					t.Fatalf("status after a kill past the re-encryption: %s", r)
				}
				n.ok("status", dev)
				newVK := volumeKeyOf(t, dev, newRec)
				if bytes.Equal(newVK, oldVK) || sha256.Sum256(dataXTSSize(t, dev, newVK, nil, data)) != want {
					t.Fatal("killed after the re-encryption: the key did not change or the plaintext changed")
				}
				return
			}
			inside++
			t.Logf("killed %s after the header showed %d bytes done (hotzone flagged: %v): state %d bytes done, hotzone %d", delay, after, inHotzone, st.Done, st.Hotzone)
			if dump := sh(t, "cryptsetup", "luksDump", dev); !strings.Contains(dump, "online-reencrypt-v2") {
				t.Fatalf("luksDump of the killed state:\n%s", dump)
			}

			// cryptsetup finishes a copy of the state.
			cp := disk(t, 16+data>>20)
			copyDevice(t, dev, cp)
			pf := keyFile(t, string(platformSecret(t, n, dev)))
			sh(t, "cryptsetup", "repair", "--batch-mode", "--key-file", pf, cp)
			if strings.Contains(sh(t, "cryptsetup", "luksDump", cp), "online-reencrypt") {
				sh(t, "cryptsetup", "reencrypt", "--resume-only", "--batch-mode", "--key-file", pf, cp)
			}
			byCryptsetup := volumeKeyOfFile(t, cp, pf)
			if bytes.Equal(byCryptsetup, oldVK) || sha256.Sum256(dataXTSSize(t, cp, byCryptsetup, nil, data)) != want {
				t.Fatal("after cryptsetup resumed: the key did not change or the plaintext changed")
			}
			// The copy's UUID must not confuse atrest's run on the original.
			zero(t, cp, 16<<20)

			n.ok("reencrypt", dev)
			n.ok("status", dev)
			newVK := volumeKeyOf(t, dev, newRec)
			if bytes.Equal(newVK, oldVK) || sha256.Sum256(dataXTSSize(t, dev, newVK, nil, data)) != want {
				t.Fatal("after atrest resumed: the key did not change or the plaintext changed")
			}
		})
	}
}

// reencryptionOf is the re-encryption state dev's header records (nil when
// none, or while the header cannot be read).
func reencryptionOf(t *testing.T, dev string) *luks2.ReencryptState {
	t.Helper()
	h, err := headerOf(t, dev)
	if err != nil {
		return nil
	}
	st, _ := h.Reencryption()
	return st
}

// headerOf reads dev's LUKS2 header.
func headerOf(t *testing.T, dev string) (*luks2.Header, error) {
	t.Helper()
	d, err := luks2.OpenFile(dev, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	return luks2.Read(context.Background(), d)
}

// platformSecret unwraps dev's platform secret with the node's local
// keystore, as atrest does through the KMS: what an administrator hands
// cryptsetup to finish a run atrest started.
func platformSecret(t *testing.T, n *node, dev string) []byte {
	t.Helper()
	h, err := headerOf(t, dev)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := local.Open(filepath.Join(n.dir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	for _, lt := range h.Tokens {
		tok, err := token.Parse(lt.JSON())
		if err != nil {
			continue
		}
		res, err := ks.Unwrap(context.Background(), []kms.UnwrapRequest{{Context: h.UUID,
			Wrapped: kms.Wrapped{Backend: tok.KMS, Key: tok.Key, KeyVersion: tok.KeyVersion, Ciphertext: tok.Ciphertext}}})
		if err != nil || res[0].Err != nil {
			t.Fatalf("unwrap: %v %v", err, res)
		}
		defer res[0].Plaintext.Wipe()
		return bytes.Clone(res[0].Plaintext.Bytes())
	}
	t.Fatal("no atrest token")
	return nil
}

// volumeKeyOfFile is the volume key cryptsetup dumps with the key file.
func volumeKeyOfFile(t *testing.T, dev, keyFile string) []byte {
	t.Helper()
	out := sh(t, "cryptsetup", "luksDump", "--batch-mode", "--dump-volume-key", "--key-file", keyFile, dev)
	i := strings.Index(out, "MK dump:")
	if i < 0 {
		t.Fatalf("no key in:\n%s", out)
	}
	vk, err := hex.DecodeString(strings.Join(strings.Fields(out[i+len("MK dump:"):]), ""))
	if err != nil {
		t.Fatal(err)
	}
	return vk
}

// copyDevice copies src onto dst (of the same size).
func copyDevice(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Sync(); err != nil {
		t.Fatal(err)
	}
}

// zero overwrites the first n bytes of dev.
func zero(t *testing.T, dev string, n int) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, n), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// atrest reencrypt shows its progress as a user sees it. On a terminal (a
// pty, through script(1)) it rewrites one line with \r: a bar, the
// percentage rising to 100 %, the rate and the time left, then a newline.
// With standard error a pipe (a log, atrestd's journal) it writes a few
// lines, one per quarter, ending at 100 %, and no \r.
func TestReencryptProgress(t *testing.T) {
	testutil.RequireCommand(t, "script", "bsdutils")
	n := localNode(t, "none")
	dev := disk(t, 48)
	n.ok("format", dev, "--name", "prog1")

	r := n.ok("reencrypt", "prog1", "--hotzone-size", "1M")
	var pcts []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if p, ok := strings.CutPrefix(l, "reencrypt prog1: "); ok {
			pcts = append(pcts, p)
		}
	}
	if strings.Contains(r.stderr, "\r") || len(pcts) < 2 || len(pcts) > 5 || pcts[len(pcts)-1] != "100%" {
		t.Fatalf("progress in a log: want a few lines, one per quarter, ending at 100%%, no \\r:\n%q", r.stderr)
	}

	cmd := exec.Command("script", "-q", "-e", "-c", fmt.Sprintf("%s -c %s reencrypt prog1 --hotzone-size 1M", atrestBinary(t), n.config), "/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("atrest reencrypt on a terminal: %v\n%s", err, out)
	}
	var updates []string
	for _, u := range strings.Split(string(out), "\r") {
		if strings.HasPrefix(u, "reencrypt prog1: [") {
			updates = append(updates, u)
		}
	}
	if len(updates) < 3 {
		t.Fatalf("on a terminal: want the progress line rewritten (\\r) at least 3 times, got %d:\n%q", len(updates), out)
	}
	last := updates[len(updates)-1]
	// The terminal turns the newline into \r\n.
	if !strings.Contains(last, "[##############################] 100%") || !strings.Contains(last, "MB/s  ETA") || !strings.Contains(string(out), last+"\r\n") {
		t.Fatalf("the terminal's last progress line: want a full bar, 100 %%, the rate and the time left, then a newline: %q", last)
	}
	if !strings.Contains(updates[1], "MB/s  ETA") {
		t.Fatalf("the terminal's progress line gives no rate and time left once data moved: %q", updates[1])
	}
}
