package swtpmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
)

// QEMU is a swtpm serving one QEMU guest: a TPM 2.0 whose control channel
// is a Unix socket, for QEMU's tpm-emulator backend (`-chardev
// socket,path=Socket -tpmdev emulator -device tpm-tis`), which the guest
// kernel's tpm_tis driver shows as /dev/tpmrm0. The real-kernel and
// booted-Debian tiers use it.
type QEMU struct {
	// Socket is the control socket for QEMU's -chardev.
	Socket string
	cmd    *exec.Cmd
	once   sync.Once
}

// StartQEMU starts swtpm with its persistent state in dir (created if
// missing). A dir used before holds the same TPM, seeds and NV included:
// a machine that boots several times keeps its TPM, as hardware does.
// QEMU powers the TPM on at each boot (PCRs start over) and shuts swtpm
// down when it exits; Stop, or the test's end, stops it in any case.
func StartQEMU(t testing.TB, dir string) *QEMU {
	t.Helper()
	bin := testutil.RequireCommand(t, "swtpm", "swtpm")
	state := filepath.Join(dir, "tpm-state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "swtpm.sock")
	_ = os.Remove(sock) // left by the previous boot's swtpm
	cmd := exec.Command(bin, "socket", "--tpm2", "--tpmstate", "dir="+state,
		"--ctrl", "type=unixio,path="+sock, "--log", "file="+filepath.Join(dir, "swtpm.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("swtpm: %v", err)
	}
	q := &QEMU{Socket: sock, cmd: cmd}
	t.Cleanup(q.Stop)
	for range 100 {
		if _, err := os.Stat(sock); err == nil {
			return q
		}
		time.Sleep(50 * time.Millisecond)
	}
	q.Stop()
	t.Fatalf("swtpm did not create %s", sock)
	return nil
}

// Stop ends swtpm (if QEMU has not shut it down already) and waits for it.
func (q *QEMU) Stop() {
	q.once.Do(func() {
		_ = q.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = q.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = q.cmd.Process.Kill()
			<-done
		}
	})
}
