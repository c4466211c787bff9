package secret

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// lockedKB is the process's locked memory (VmLck) in KiB.
func lockedKB(t *testing.T) int {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmLck:") {
			n, err := strconv.Atoi(strings.Fields(line)[1])
			if err != nil {
				t.Fatal(line)
			}
			return n
		}
	}
	t.Fatal("VmLck missing from /proc/self/status")
	return 0
}

// An unlock of many volumes holds a 32-byte key per volume: they share
// locked pages (one page, not one per key, against RLIMIT_MEMLOCK), each
// key its own bytes, and a wiped key's bytes are zeroed at once while
// the others stay; the page goes when its last key is wiped.
func TestSmallKeysSharePages(t *testing.T) {
	before := lockedKB(t)
	keys := make([]*Key, 24)
	for i := range keys {
		k, err := FromBytes(bytes.Repeat([]byte{byte(i + 1)}, 32))
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	if got, page := lockedKB(t)-before, unix.Getpagesize()/1024; got > page {
		t.Fatalf("24 keys of 32 bytes lock %d KiB, want at most one page (%d KiB)", got, page)
	}
	slot := keys[3].Bytes()[:32:32]
	pageMem := keys[0].mem.pg.mem
	keys[3].Wipe()
	if !bytes.Equal(slot, make([]byte, 32)) {
		t.Fatal("a wiped key's slot still holds its bytes")
	}
	for i, k := range keys {
		if i != 3 && !bytes.Equal(k.Bytes(), bytes.Repeat([]byte{byte(i + 1)}, 32)) {
			t.Fatalf("key %d changed when key 3 was wiped", i)
		}
	}
	for _, k := range keys {
		k.Wipe()
	}
	if err := unix.Msync(pageMem, unix.MS_ASYNC); err != unix.ENOMEM {
		t.Fatalf("shared page still mapped after its last key was wiped (msync: %v)", err)
	}
	if got := lockedKB(t); got != before {
		t.Fatalf("locked memory %d KiB after every key was wiped, %d before", got, before)
	}
}

// Keys made and wiped concurrently (the nodes of a boot storm, atrestd's
// volumes) never share bytes.
func TestSmallKeysConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 200 {
				want := bytes.Repeat([]byte{byte(g), byte(i)}, 8+i%40)
				k, err := FromBytes(bytes.Clone(want))
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(k.Bytes(), want) {
					t.Error("a key's bytes changed under other keys")
				}
				k.Wipe()
			}
		})
	}
	wg.Wait()
}
