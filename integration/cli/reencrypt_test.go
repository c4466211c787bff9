package cli

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/xts"

	"github.com/atrest/atrest/pkg/luks2"
)

var recoveryKeyRE = regexp.MustCompile(`[cbdefghijklnrtuv]{8}(-[cbdefghijklnrtuv]{8}){7}`)

// volumeKeyOf is the volume key cryptsetup dumps with the recovery key.
func volumeKeyOf(t *testing.T, dev, recovery string) []byte {
	t.Helper()
	out := sh(t, "cryptsetup", "luksDump", "--batch-mode", "--dump-volume-key", "--key-file", keyFile(t, recovery), dev)
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

// An atrest reencrypt killed right after it put the volume into
// re-encryption (the process exits 137): cryptsetup sees the state, the
// next atrest reencrypt resumes and finishes it, status is healthy, the
// recovery key printed by the killed run opens the volume and dumps a new
// volume key under which the data reads as before.
func TestReencryptKilledResumes(t *testing.T) {
	n := localNode(t, "print")
	dev := disk(t, 48)
	f := jsonOf[formatJSON](t, n.ok("-o", "json", "format", dev, "--name", "cut1"))
	oldVK := volumeKeyOf(t, dev, f.Recovery.Key)
	plain := make([]byte, 32<<20)
	rand.Read(plain)
	dataXTS(t, dev, oldVK, plain)

	n.env = []string{"ATREST_FAILPOINT=reencrypt-after-start"}
	r := n.run(nil, "reencrypt", "cut1")
	if r.code != 137 {
		t.Fatalf("the failpoint did not end the run: %s", r)
	}
	n.env = nil
	newRec := recoveryKeyRE.FindString(r.stdout)
	if newRec == "" || newRec == f.Recovery.Key {
		t.Fatalf("the killed run printed no new recovery key: %s", r)
	}
	if dump := sh(t, "cryptsetup", "luksDump", dev); !strings.Contains(dump, "online-reencrypt-v2") {
		t.Fatalf("not in re-encryption:\n%s", dump)
	}
	// open refuses it with its own code, the progress and the command.
	if r := n.run(nil, "open", "cut1"); r.code != 20 || !strings.Contains(r.stderr, "0 of 33554432 bytes done") || !strings.Contains(r.stderr, "atrest reencrypt cut1") {
		t.Fatalf("open of a volume in re-encryption: %s", r)
	}
	if out := n.ok("reencrypt", "cut1").stdout; !strings.Contains(out, "cut1: resumed a re-encryption") {
		t.Fatalf("the second run did not resume: %s", out)
	}
	n.ok("status", "cut1")
	if !cryptsetupAccepts(t, dev, newRec) || cryptsetupAccepts(t, dev, f.Recovery.Key) {
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

// atrest reencrypt killed (SIGKILL) at points of its data pass — in the
// first hotzone, after one, two and three of four 64 MiB hotzones, as
// soon as a header shows it — leaves a state cryptsetup luksDump accepts,
// and the next atrest reencrypt finishes it with the data intact under the
// new key. (cryptsetup finishing such states is proven in pkg/luks2 and
// integration/luks2: here only atrest holds the platform secret.)
func TestReencryptKilledAtRandomPoints(t *testing.T) {
	const data = 256 << 20
	for i, kill := range []struct {
		name  string
		after uint64 // bytes done
	}{{"in-first-hotzone", 0}, {"after-one", 64 << 20}, {"after-two", 128 << 20}, {"after-three", 192 << 20}} {
		t.Run(kill.name, func(t *testing.T) {
			n := localNode(t, "print")
			dev := disk(t, 16+data>>20)
			f := jsonOf[formatJSON](t, n.ok("-o", "json", "format", dev, "--name", "cut"+string(rune('a'+i))))
			oldVK := volumeKeyOf(t, dev, f.Recovery.Key)
			plain := make([]byte, data)
			rand.Read(plain)
			dataXTSSize(t, dev, oldVK, plain, data)

			cmd := exec.Command(atrestBinary(t), "-c", n.config, "reencrypt", dev)
			var out bytes.Buffer
			cmd.Stdout = &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killed := false
			for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline) && !killed; time.Sleep(5 * time.Millisecond) {
				d, err := luks2.OpenFile(dev, false)
				if err != nil {
					t.Fatal(err)
				}
				h, err := luks2.Read(context.Background(), d)
				d.Close()
				if err != nil {
					continue
				}
				if st, _ := h.Reencryption(); st != nil && st.Done >= kill.after && (kill.after > 0 || st.Hotzone > 0) {
					cmd.Process.Signal(syscall.SIGKILL)
					killed = true
				}
			}
			err := cmd.Wait()
			if !killed || err == nil {
				t.Fatalf("the run was not killed in re-encryption (finished: %v)", err == nil)
			}
			newRec := recoveryKeyRE.FindString(out.String())
			if newRec == "" {
				t.Fatalf("no recovery key printed: %s", out.String())
			}
			if dump := sh(t, "cryptsetup", "luksDump", dev); !strings.Contains(dump, "online-reencrypt-v2") {
				t.Fatalf("luksDump of the killed state:\n%s", dump)
			}
			n.ok("reencrypt", dev)
			n.ok("status", dev)
			newVK := volumeKeyOf(t, dev, newRec)
			if bytes.Equal(newVK, oldVK) || !bytes.Equal(dataXTSSize(t, dev, newVK, nil, data), plain) {
				t.Fatal("after resuming: the key did not change or the plaintext changed")
			}
		})
	}
}
