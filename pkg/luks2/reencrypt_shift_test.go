package luks2

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/luks2/luks2test"
)

// shiftFS is the size of the file system encrypted in place; the image is
// 32 MiB larger (cryptsetup's --reduce-device-size 32M).
const shiftFS = 32 << 20

// shiftImage makes an image with an ext4 file system of shiftFS bytes
// holding a file of random bytes, 32 MiB of room after it, and returns the
// image, the file's content and the file system's bytes.
func shiftImage(t *testing.T) (img string, file, fs []byte) {
	t.Helper()
	testutil.RequireCommand(t, "cryptsetup", "cryptsetup-bin")
	testutil.RequireCommand(t, "mkfs.ext4", "e2fsprogs")
	dir := t.TempDir()
	img = filepath.Join(dir, "disk.img")
	file = make([]byte, 3<<20)
	rand.Read(file)
	src := filepath.Join(dir, "data.bin")
	if err := os.WriteFile(src, file, 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "mkfs.ext4", "-q", "-F", "-b", "4096", img, "32M")
	sh(t, "debugfs", "-w", "-R", "write "+src+" data.bin", img)
	if err := os.Truncate(img, shiftFS+32<<20); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return img, file, raw[:shiftFS]
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// checkEncrypted: the header is an ordinary one cryptsetup opens with the
// passphrase, and the data area decrypts (x/crypto/xts) to the file
// system as it was: e2fsck finds it clean and the file reads back.
func checkEncrypted(t *testing.T, img string, file, fs []byte) {
	t.Helper()
	dump := sh(t, "cryptsetup", "luksDump", img)
	if strings.Contains(dump, "online-reencrypt") || strings.Contains(dump, "reencrypt") {
		t.Fatalf("still in encryption:\n%s", dump)
	}
	kf := filepath.Join(t.TempDir(), "key")
	os.WriteFile(kf, []byte("platform"), 0o600)
	sh(t, "cryptsetup", "open", "--test-passphrase", "--key-file", kf, img)
	d, err := OpenFile(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	plain := decryptedFS(t, d)
	if !bytes.Equal(plain, fs) {
		t.Fatal("the decrypted data area differs from the file system as it was")
	}
	if err := luks2test.CheckExtFS(plain, t.TempDir(), "data.bin", file); err != nil {
		t.Fatal(err)
	}
}

// encryptInit starts an encryption in place of img with cryptsetup
// (--init-only), passphrase "platform".
func encryptInit(t *testing.T, img string, sector string) {
	t.Helper()
	kf := filepath.Join(t.TempDir(), "key")
	os.WriteFile(kf, []byte("platform"), 0o600)
	if out, err := cryptsetup(t, "reencrypt", "--encrypt", "--init-only", "--reduce-device-size", "32M", "--sector-size", sector,
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", kf, img); err != nil {
		t.Fatalf("cryptsetup init: %v\n%s", err, out)
	}
}

// resumeEncrypt finishes (or with stop, runs steps of) the encryption in
// place on img with the passphrase "platform".
func resumeEncrypt(t *testing.T, img string, steps int) (*Header, error) {
	t.Helper()
	d, err := OpenFile(img, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	return resumeEncryptOn(t, d, steps)
}

func resumeEncryptOn(t *testing.T, d Device, steps int) (*Header, error) {
	t.Helper()
	h, err := Read(context.Background(), d)
	if err != nil {
		return nil, err
	}
	vk, err := h.OpenEncryptKey(d, pass(t, "platform"))
	if err != nil {
		return nil, err
	}
	r, err := h.ResumeEncrypt(d, vk)
	vk.Wipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	r.Progress = func(done, total uint64) {
		if n++; steps > 0 && n > steps {
			cancel()
		}
	}
	return r.Run(ctx)
}

// atrest finishes an encryption in place cryptsetup initialised
// (reencrypt --encrypt --init-only --reduce-device-size 32M), with 512-
// and 4096-byte sectors: cryptsetup opens the result, the data area
// decrypts to the file system as it was, e2fsck clean, the file intact.
func TestEncryptInPlaceAtrestFinishesCryptsetup(t *testing.T) {
	for _, sector := range []string{"512", "4096"} {
		t.Run(sector, func(t *testing.T) {
			img, file, fs := shiftImage(t)
			encryptInit(t, img, sector)
			if _, err := resumeEncrypt(t, img, 0); err != nil {
				t.Fatal(err)
			}
			checkEncrypted(t, img, file, fs)
		})
	}
}

// atrest stops after one hotzone; cryptsetup reencrypt --resume-only
// accepts the state and finishes it with the same result.
func TestEncryptInPlaceCryptsetupFinishesAtrest(t *testing.T) {
	img, file, fs := shiftImage(t)
	encryptInit(t, img, "512")
	if _, err := resumeEncrypt(t, img, 1); err == nil {
		t.Fatal("the run was not stopped")
	}
	kf := filepath.Join(t.TempDir(), "key")
	os.WriteFile(kf, []byte("platform"), 0o600)
	if out, err := cryptsetup(t, "reencrypt", "--resume-only", "--force-offline-reencrypt", "--key-file", kf, img); err != nil {
		t.Fatalf("cryptsetup resume: %v\n%s", err, out)
	}
	checkEncrypted(t, img, file, fs)
}

// tornDevice is an atomDevice whose writes of more than 64 KiB (the
// hotzones of an encryption in place) land in 4 MiB pieces, each an atom,
// so that a crash can cut a hotzone short.
type tornDevice struct{ atomDevice }

func (d *tornDevice) WriteAt(p []byte, off int64) (int, error) {
	if len(p) <= 64<<10 {
		return d.atomDevice.WriteAt(p, off)
	}
	for i := 0; i < len(p); i += 4 << 20 {
		if d.used >= d.budget {
			return i, errPowerLoss
		}
		d.used++
		d.memDevice.WriteAt(p[i:min(i+4<<20, len(p))], off+int64(i))
	}
	return len(p), nil
}

// decryptedFS is the first shiftFS bytes of d's data area decrypted with
// golang.org/x/crypto/xts under the key "platform" opens.
func decryptedFS(t *testing.T, d Device) []byte {
	t.Helper()
	h := read(t, d)
	vk, _, err := h.Open(d, pass(t, "platform"))
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	a, err := h.Activation()
	if err != nil {
		t.Fatal(err)
	}
	ct := make([]byte, shiftFS)
	if _, err := d.ReadAt(ct, int64(a.Offset)); err != nil {
		t.Fatal(err)
	}
	plain, err := luks2test.DataXTS(vk.Bytes(), ct, int(a.SectorSize), false)
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

// encryptStart initialises an encryption in place of dev with atrest:
// a new header (4096-byte sectors), the platform keyslot ("platform") and
// a token, CommitEncrypt.
func encryptStart(t *testing.T, dev Device) error {
	t.Helper()
	size, err := dev.Size()
	if err != nil {
		t.Fatal(err)
	}
	h, vk, err := New(FormatOptions{SectorSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	u, err := h.BeginEncrypt(vk, uint64(size))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddKeyslot(vk, pass(t, "platform"), KeyslotOptions{Slot: 0, KDF: kdf.Platform()}); err != nil {
		t.Fatal(err)
	}
	if _, err := u.SetToken(0, []byte(reencToken)); err != nil {
		t.Fatal(err)
	}
	_, err = u.CommitEncrypt(context.Background(), dev)
	return err
}

// atrest initialises an encryption in place; cryptsetup accepts the state
// (luksDump: mode encrypt, datashift) and finishes it, and so does atrest:
// both results decrypt to the file system as it was, e2fsck clean.
func TestEncryptInPlaceAtrestInit(t *testing.T) {
	for _, who := range []string{"cryptsetup", "atrest"} {
		t.Run(who, func(t *testing.T) {
			img, file, fs := shiftImage(t)
			d, err := OpenFile(img, true)
			if err != nil {
				t.Fatal(err)
			}
			if err := encryptStart(t, d); err != nil {
				t.Fatal(err)
			}
			d.Close()
			if dump := sh(t, "cryptsetup", "luksDump", img); !strings.Contains(dump, "Mode:       encrypt") || !strings.Contains(dump, "datashift") {
				t.Fatalf("luksDump of atrest's start:\n%s", dump)
			}
			if who == "cryptsetup" {
				if _, err := cryptsetupResume(t, img); err != nil {
					t.Fatal(err)
				}
			} else if _, err := resumeEncrypt(t, img, 0); err != nil {
				t.Fatal(err)
			}
			checkEncrypted(t, img, file, fs)
		})
	}
}

// TestEncryptInPlaceInitCrashAtEveryWrite interrupts atrest's whole
// encryption in place — the copy of the start, its marker, the header,
// every hotzone (in 4 MiB pieces), the final header — after every write.
// A state without a readable header is put back by RecoverEncryptInit
// where the header had begun to overwrite the start, and then shows the
// file system byte for byte as it was (it is started again); a state with
// a header is resumed. Either way the end decrypts to the file system as
// it was; every 8th state in encryption is also finished by cryptsetup.
func TestEncryptInPlaceInitCrashAtEveryWrite(t *testing.T) {
	img, file, fs := shiftImage(t)
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	run := func(dev Device) error {
		if err := encryptStart(t, dev); err != nil {
			return err
		}
		_, err := resumeEncryptOn(t, dev, 0)
		return err
	}
	dry := &tornDevice{atomDevice{memDevice: memFromBytes(raw), budget: 1 << 30}}
	if err := run(dry); err != nil {
		t.Fatal(err)
	}
	checkEncrypted(t, imageOf(t, dry.memDevice, t.TempDir(), "dry.img"), file, fs)
	total := dry.used
	dir := t.TempDir()
	restored, resumed := 0, 0
	for budget := 0; budget < total; budget++ {
		dev := &tornDevice{atomDevice{memDevice: memFromBytes(raw), budget: budget}}
		if err := run(dev); err == nil {
			t.Fatalf("budget %d of %d: no power loss", budget, total)
		}
		crashed := dev.memDevice.snapshot()
		if _, err := Read(context.Background(), crashed); err != nil {
			ok, err := RecoverEncryptInit(context.Background(), crashed, DefaultDataOffset)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				restored++
			}
			if !bytes.Equal(crashed.bytesOf()[:shiftFS], fs) {
				t.Fatalf("budget %d: no header, and the file system is not as it was (restored: %v)", budget, ok)
			}
			if err := run(crashed); err != nil {
				t.Fatalf("budget %d: start again: %v", budget, err)
			}
		} else {
			h, _ := Read(context.Background(), crashed)
			if st, err := h.EncryptionInPlace(); err != nil {
				t.Fatalf("budget %d: %v", budget, err)
			} else if st != nil {
				resumed++
				if resumed%8 == 1 {
					cp := imageOf(t, crashed.snapshot(), dir, fmt.Sprintf("crash%d.img", budget))
					if _, err := cryptsetupResume(t, cp); err != nil {
						t.Fatalf("budget %d (%+v): cryptsetup: %v", budget, *st, err)
					}
					checkEncrypted(t, cp, file, fs)
					os.Remove(cp)
				}
				if _, err := resumeEncryptOn(t, crashed, 0); err != nil {
					t.Fatalf("budget %d (%+v): atrest resume: %v", budget, *st, err)
				}
			}
		}
		if got := decryptedFS(t, crashed); !bytes.Equal(got, fs) {
			t.Fatalf("budget %d: the file system differs at the end", budget)
		}
	}
	t.Logf("%d interruption points: %d restored from the marked copy, %d resumed", total, restored, resumed)
	if restored == 0 || resumed == 0 {
		t.Fatal("no interruption needed the copy, or none left an encryption to resume")
	}
}
