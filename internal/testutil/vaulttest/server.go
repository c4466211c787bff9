package vaulttest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Server is a running test Vault: the JSON line vaultserver prints, and
// the process.
type Server struct {
	Address    string   `json:"address"`
	RootToken  string   `json:"root_token"`
	CAFile     string   `json:"ca_file"`
	UnsealKeys []string `json:"unseal_keys"`
	PID        int      `json:"pid"`

	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *bytes.Buffer
	done   chan struct{}
	once   sync.Once
}

// Start runs a Vault server for t alone (use it for tests that seal or
// stop it) and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := start(Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.stop() })
	return s
}

var (
	sharedMu  sync.Mutex
	sharedSrv *Server
)

// Shared returns the test binary's shared Vault server, starting it on
// first use. The package's TestMain must run Main so that it stops.
func Shared(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedSrv == nil {
		s, err := start(bin)
		if err != nil {
			t.Fatal(err)
		}
		sharedSrv = s
	}
	return sharedSrv
}

// Main runs the tests and stops the shared server; call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(vaulttest.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	sharedMu.Lock()
	if sharedSrv != nil {
		sharedSrv.stop()
		sharedSrv = nil
	}
	sharedMu.Unlock()
	return code
}

func start(bin string) (*Server, error) {
	return startProcess(bin, nil)
}

// startProcess runs bin with args and -exit-on-eof and reads its ready
// line into the Server and, if not nil, into also.
func startProcess(bin string, also any, args ...string) (*Server, error) {
	cmd := exec.Command(bin, append(args, "-exit-on-eof")...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s := &Server{cmd: cmd, stdin: stdin, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	line := make(chan []byte, 1)
	go func() {
		b, _ := bufio.NewReader(stdout).ReadBytes('\n')
		line <- b
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case b := <-line:
		err := json.Unmarshal(b, s)
		if err == nil && also != nil {
			err = json.Unmarshal(b, also)
		}
		if err != nil {
			s.stop()
			return nil, fmt.Errorf("vaultserver did not start: %q: %s", b, s.stderr.String())
		}
	case <-time.After(2 * time.Minute):
		s.stop()
		return nil, fmt.Errorf("vaultserver printed nothing in 2 minutes: %s", s.stderr.String())
	}
	return s, nil
}

// stop ends the server: end of input first (it cleans up), then SIGKILL.
func (s *Server) stop() {
	s.once.Do(func() {
		_ = s.stdin.Close()
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
}

// Stop stops the server now, as a crash would: later requests find the
// port closed (connection refused).
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	s.once.Do(func() { _ = s.stdin.Close() })
	// A killed server cannot remove its directory (CA and key files).
	if dir := filepath.Dir(filepath.Dir(s.CAFile)); strings.HasPrefix(filepath.Base(dir), "atrest-vaultserver-") {
		_ = os.RemoveAll(dir)
	}
}

// Freeze stops the server process (SIGSTOP) as a hung server: the kernel
// still accepts connections, nothing answers. Thaw resumes it; a frozen
// server is thawed when the test ends.
func (s *Server) Freeze(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.cmd.Process.Signal(syscall.SIGCONT) })
	// SIGSTOP is delivered asynchronously: a thread busy on another CPU
	// may still answer a request. Wait until every thread is stopped.
	deadline := time.Now().Add(10 * time.Second)
	for !stopped(s.cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatalf("vault server pid %d not stopped 10s after SIGSTOP", s.cmd.Process.Pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stopped reports whether every thread of pid is in the stopped state
// ("T" in /proc/PID/task/TID/stat).
func stopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			return false
		}
		// The state follows the parenthesised command name.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
}

// Thaw resumes a frozen server.
func (s *Server) Thaw(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

// Client returns a client with the root token that trusts the server's CA.
func (s *Server) Client(t testing.TB) *api.Client {
	t.Helper()
	return s.client(t, s.Address)
}

func (s *Server) client(t testing.TB, address string) *api.Client {
	t.Helper()
	return s.clientOf(t, address, false)
}

// clientOf is client, with vault/api's following of a standby's 307
// turned off if noRedirects.
func (s *Server) clientOf(t testing.TB, address string, noRedirects bool) *api.Client {
	t.Helper()
	conf := api.DefaultConfig()
	conf.Address = address
	conf.MaxRetries = 0
	conf.DisableRedirects = noRedirects
	if err := conf.ConfigureTLS(&api.TLSConfig{CACert: s.CAFile}); err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(s.RootToken)
	return c
}

// Seal seals the server through the API.
func (s *Server) Seal(t testing.TB) {
	t.Helper()
	if err := s.Client(t).Sys().Seal(); err != nil {
		t.Fatalf("seal: %v", err)
	}
}

// Unseal unseals the server with its key shares and waits until it is
// active again.
func (s *Server) Unseal(t testing.TB) {
	t.Helper()
	c := s.Client(t)
	for _, k := range s.UnsealKeys {
		st, err := c.Sys().Unseal(k)
		if err != nil {
			t.Fatalf("unseal: %v", err)
		}
		if !st.Sealed {
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		h, err := c.Sys().HealthWithContext(ctx)
		if err == nil && !h.Sealed && !h.Standby {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("vault not active 30s after unseal: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Env returns the environment a vault CLI or atrest process needs to
// reach the server with the root token.
func (s *Server) Env() []string {
	return append(os.Environ(), "VAULT_ADDR="+s.Address, "VAULT_CACERT="+s.CAFile, "VAULT_TOKEN="+s.RootToken)
}
