package secret

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// marker is a recognisable key value: if it ever shows up in output, a
// secret leaked.
var marker = []byte("SUPER-SECRET-KEY-MATERIAL-0123456789")

func markerKey(t *testing.T) *Key {
	t.Helper()
	k, err := FromBytes(bytes.Clone(marker))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

func TestKeyNeverPrints(t *testing.T) {
	k := markerKey(t)
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		outs = append(outs, fmt.Sprintf(verb, k))
	}
	outs = append(outs, fmt.Sprintf("%v", struct{ K *Key }{k}), fmt.Sprint(k), k.String())
	var logbuf bytes.Buffer
	slog.New(slog.NewTextHandler(&logbuf, nil)).Info("opened", "key", k)
	slog.New(slog.NewJSONHandler(&logbuf, nil)).Info("opened", "key", k)
	outs = append(outs, logbuf.String())
	for _, o := range outs {
		if strings.Contains(o, string(marker)) || strings.Contains(strings.ToLower(o), fmt.Sprintf("%x", marker[:8])) {
			t.Fatalf("key material leaked into output %q", o)
		}
	}
	if _, err := json.Marshal(struct{ K *Key }{k}); err == nil {
		t.Fatal("json.Marshal of a key succeeded; it must refuse")
	}
}

func TestFromBytesWipesSource(t *testing.T) {
	src := bytes.Clone(marker)
	k, err := FromBytes(src)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Wipe()
	if !bytes.Equal(src, make([]byte, len(src))) {
		t.Fatal("source slice still holds the key after FromBytes")
	}
	if !bytes.Equal(k.Bytes(), marker) {
		t.Fatal("key does not hold the copied bytes")
	}
}

func TestWipe(t *testing.T) {
	k, err := Random(64)
	if err != nil {
		t.Fatal(err)
	}
	if k.Len() != 64 || bytes.Equal(k.Bytes(), make([]byte, 64)) {
		t.Fatal("Random returned an empty key")
	}
	mem := k.mem.page // the mapping, to check it is really gone
	k.Wipe()
	k.Wipe() // idempotent
	if !k.Wiped() || k.Len() != 0 {
		t.Fatal("key reports unwiped after Wipe")
	}
	if k.mem.page != nil {
		t.Fatal("mapping still referenced after Wipe")
	}
	// The mapping is gone: msync on it must fail with ENOMEM.
	if err := unix.Msync(mem, unix.MS_ASYNC); err != unix.ENOMEM {
		t.Fatalf("mapping still present after Wipe (msync: %v)", err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Bytes on a wiped key did not panic")
		}
	}()
	_ = k.Bytes()
}

func TestEqual(t *testing.T) {
	a := markerKey(t)
	b := markerKey(t)
	c, _ := Random(len(marker))
	defer c.Wipe()
	if !a.Equal(b) {
		t.Fatal("equal keys compare unequal")
	}
	if a.Equal(c) {
		t.Fatal("different keys compare equal")
	}
	var wiped Key
	if a.Equal(&wiped) {
		t.Fatal("a key equals an empty one")
	}
}

func TestLocked(t *testing.T) {
	k, err := New(32)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Wipe()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmLck:") {
			if strings.Fields(line)[1] == "0" {
				t.Fatalf("no locked memory while a key is alive: %s", line)
			}
			return
		}
	}
	t.Fatal("VmLck missing from /proc/self/status")
}

func TestRead(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		max      int
		trim     bool
		want     string
		wantErr  string
	}{
		{name: "trims newline", in: "passphrase\n", max: 64, trim: true, want: "passphrase"},
		{name: "trims crlf", in: "passphrase\r\n", max: 64, trim: true, want: "passphrase"},
		{name: "keeps newline", in: "key\n", max: 64, want: "key\n"},
		{name: "exact max", in: "abcd", max: 4, want: "abcd"},
		{name: "too long", in: "abcde", max: 4, wantErr: "longer than 4"},
		{name: "empty", in: "\n", max: 4, trim: true, wantErr: "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := Read(strings.NewReader(tc.in), tc.max, tc.trim)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer k.Wipe()
			if string(k.Bytes()) != tc.want {
				t.Fatalf("read %d bytes, want %d", k.Len(), len(tc.want))
			}
		})
	}
}

func TestInvalidLength(t *testing.T) {
	for _, n := range []int{0, -1, MaxLen + 1} {
		if _, err := New(n); err == nil {
			t.Fatalf("New(%d) succeeded", n)
		}
	}
}

// TestAESGCM checks that the AEAD in locked memory encrypts like the
// standard library's, and that nothing of the key is left in its heap
// objects.
func TestAESGCM(t *testing.T) {
	k, err := Random(32)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Wipe()
	a, err := NewAESGCM(k)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, a.NonceSize())
	ct := a.Seal(nil, nonce, []byte("plaintext"), []byte("ad"))
	block, _ := aes.NewCipher(k.Bytes())
	std, _ := cipher.NewGCM(block)
	if want := std.Seal(nil, nonce, []byte("plaintext"), []byte("ad")); !bytes.Equal(ct, want) {
		t.Fatal("locked AES-GCM disagrees with crypto/cipher")
	}
	pt, err := a.Open(nil, nonce, ct, []byte("ad"))
	if err != nil || string(pt) != "plaintext" {
		t.Fatalf("open: %q, %v", pt, err)
	}
	a.Wipe()
	a.Wipe()
}
