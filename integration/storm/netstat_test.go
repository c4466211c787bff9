package storm_test

import (
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/atrest/atrest/integration/storm"
)

// The storm's reports name the kernel's listen-queue overflows: a
// listener whose queue is full (backlog 0, nobody accepting) makes the
// counter rise, and the bound reported is the machine's somaxconn.
func TestListenOverflowsCountsAFullQueue(t *testing.T) {
	before, max, err := storm.ListenOverflows()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); max != want {
		t.Errorf("somaxconn %d, /proc says %d", max, want)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	var conns []net.Conn
	for range 4 {
		if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
			conns = append(conns, c)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	after, _, err := storm.ListenOverflows()
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("listen-queue overflows %d before and %d after four connects to a full queue", before, after)
	}
}
