// Package swtpmtest starts a software TPM (swtpm) on loopback for one test,
// with its state in the test's temporary directory, and stops it when the
// test ends. Without swtpm the test skips, or fails in strict mode
// (testutil.Missing): a skipped TPM tier is not a passed one.
package swtpmtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
)

// TPM is a running swtpm.
type TPM struct {
	// Device is the device string for pkg/tpm2 and systemd's
	// --tpm2-device: "swtpm:host=127.0.0.1,port=P".
	Device string
	// Port is the data port; the control port is Port+1.
	Port int
	// StateDir holds the TPM's persistent state (its seeds).
	StateDir string
	cmd      *exec.Cmd
	exited   chan error
	once     sync.Once
}

// Start starts a fresh swtpm (new seeds: a different TPM from every other
// Start) and registers its stop with t.Cleanup.
func Start(t testing.TB) *TPM {
	t.Helper()
	bin := testutil.RequireCommand(t, "swtpm", "swtpm")
	dir := t.TempDir()
	var lastErr error
	for range 5 {
		port, err := freePortPair()
		if err != nil {
			t.Fatal(err)
		}
		s, err := start(bin, dir, port)
		if err == nil {
			t.Cleanup(s.stop)
			return s
		}
		lastErr = err
	}
	t.Fatalf("swtpm did not start: %v", lastErr)
	return nil
}

func start(bin, dir string, port int) (*TPM, error) {
	cmd := exec.Command(bin, "socket", "--tpm2",
		"--tpmstate", "dir="+dir,
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
		"--flags", "not-need-init,startup-clear")
	// swtpm dies with the test binary, even when a timeout kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	log, err := os.Create(filepath.Join(dir, "swtpm.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	log.Close()
	s := &TPM{
		Device: "swtpm:host=127.0.0.1,port=" + strconv.Itoa(port),
		Port:   port, StateDir: dir, cmd: cmd, exited: make(chan error, 1),
	}
	go func() { s.exited <- cmd.Wait() }()
	// Wait until the data port accepts connections, or swtpm exits (its
	// port was taken).
	for {
		select {
		case err := <-s.exited:
			out, _ := os.ReadFile(filepath.Join(dir, "swtpm.log"))
			return nil, fmt.Errorf("swtpm exited: %v: %s", err, out)
		default:
		}
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			c.Close()
			return s, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the TPM now (as a TPM that vanished mid-boot); the test's
// cleanup does nothing more.
func (s *TPM) Stop() { s.stop() }

func (s *TPM) stop() {
	s.once.Do(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
	})
}

// freePortPair finds a port P with P+1 also free on 127.0.0.1.
func freePortPair() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if p >= 65535 {
			continue
		}
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		if err != nil {
			continue
		}
		l2.Close()
		return p, nil
	}
	return 0, fmt.Errorf("no free pair of TCP ports on 127.0.0.1")
}

// ExtendPCR7 changes PCR 7 of the sha256 bank with tpm2-tools (as a
// changed Secure Boot state would), through the data port, so nothing
// else may hold the TPM's connection at the time.
func (s *TPM) ExtendPCR7(t testing.TB) {
	t.Helper()
	bin := testutil.RequireCommand(t, "tpm2_pcrextend", "tpm2-tools")
	out, err := exec.Command(bin, "-T", fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", s.Port),
		"7:sha256=0000000000000000000000000000000000000000000000000000000000000001").CombinedOutput()
	if err != nil {
		t.Fatalf("tpm2_pcrextend: %v: %s", err, out)
	}
}
