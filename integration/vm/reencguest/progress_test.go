package reencguest

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/integration/vm/guest"
)

// openPTY returns a new pseudo-terminal's master and slave, mounting
// devpts first where the guest has none.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	if _, err := os.Stat("/dev/pts/ptmx"); err != nil {
		if err := os.MkdirAll("/dev/pts", 0o755); err != nil {
			t.Fatal(err)
		}
		guest.Run(t, "mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666", "devpts", "/dev/pts")
		t.Cleanup(func() { _, _ = guest.Try("umount", "/dev/pts") })
	}
	fd, err := unix.Open("/dev/pts/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	master = os.NewFile(uintptr(fd), "ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return master, slave
}

// An online re-encryption of a mounted volume shows its progress on a
// terminal as the offline one does: one line rewritten with \r, the bar
// rising to a full one at 100 % with the rate and the time left, then a
// newline; the volume ends settled under the new key, its tree and file
// system intact.
func TestOnlineReencryptProgressOnATerminal(t *testing.T) {
	n := newNode(t)
	m := newMounted(t, n, "onp", 32)
	master, slave := openPTY(t)
	defer master.Close()
	run := n.cmd("reencrypt", "onp", "--hotzone-size", "1M")
	var out bytes.Buffer
	run.Stdout, run.Stderr = &out, slave
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var tty bytes.Buffer
	read := make(chan struct{})
	go func() {
		// Ends with EIO once the last slave is closed.
		_, _ = tty.ReadFrom(master)
		close(read)
	}()
	if err := run.Wait(); err != nil {
		t.Fatalf("atrest reencrypt on a terminal: %v\n%s%q", err, out.String(), tty.String())
	}
	<-read
	var updates []string
	for _, u := range strings.Split(tty.String(), "\r") {
		if strings.HasPrefix(u, "reencrypt onp: [") {
			updates = append(updates, u)
		}
	}
	if len(updates) < 3 {
		t.Fatalf("want the progress line rewritten (\\r) at least 3 times, got %d:\n%q", len(updates), tty.String())
	}
	last := updates[len(updates)-1]
	if !strings.Contains(last, "[##############################] 100%") || !strings.Contains(last, "MB/s  ETA") || !strings.Contains(tty.String(), last+"\r\n") {
		t.Fatalf("the last progress line: want a full bar, 100 %%, the rate and the time left, then a newline: %q", last)
	}
	m.checkSettled(t, cryptsetupKey)
	m.checkTree(t)
	m.fsckAndReopen(t)
}
