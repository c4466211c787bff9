// Package kmiptest runs Debian's pykmip-server (package python3-pykmip)
// for tests: on 127.0.0.1 at a free port, with a CA and certificates the
// test makes, its SQLite database in a temporary directory. Where the
// server is not installed the test is skipped, or fails in strict mode
// (testutil.Missing).
package kmiptest

import (
	"bytes"
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

// Server is a running pykmip-server.
type Server struct {
	// Address is 127.0.0.1:PORT.
	Address string
	// ServerName is the DNS name in the server certificate.
	ServerName string
	// CA signed the server's and the clients' certificates.
	CA *CA
	// Client is a client identity the server accepts (common name
	// "atrest-node").
	Client Identity
	// Dir holds the certificates, the configuration and the database.
	Dir string

	cmd  *exec.Cmd
	log  *bytes.Buffer
	once sync.Once
}

// Binary returns pykmip-server's path, or skips (fails in strict mode).
// The unit tier (go test -short) skips.
func Binary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs pykmip-server; not part of the unit tier (-short)")
	}
	return testutil.RequireCommand(t, "pykmip-server", "python3-pykmip")
}

// Start runs a server for t and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	ca := NewCA(t, dir, "kmiptest")
	const name = "kmip.test"
	srvID := ca.Server(t, name)
	s := &Server{ServerName: name, CA: ca, Client: ca.Client(t, "atrest-node"), Dir: dir, log: &bytes.Buffer{}}
	port := freePort(t)
	s.Address = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	conf := filepath.Join(dir, "server.conf")
	policies := filepath.Join(dir, "policies")
	if err := os.Mkdir(policies, 0o700); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`[server]
hostname=127.0.0.1
port=%d
certificate_path=%s
key_path=%s
ca_path=%s
auth_suite=TLS1.2
policy_path=%s
enable_tls_client_auth=True
logging_level=INFO
database_path=%s
`, port, srvID.CertFile, srvID.KeyFile, ca.File, policies, filepath.Join(dir, "pykmip.db"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(bin, "-f", conf, "-l", filepath.Join(dir, "server.log"))
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	// pykmip-server takes about a second to import its modules.
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := net.DialTimeout("tcp", s.Address, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			s.Stop()
			t.Fatalf("pykmip-server did not listen on %s: %s\n%s", s.Address, err, s.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// Stop ends the server (the address then refuses connections).
func (s *Server) Stop() {
	s.once.Do(func() {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		_ = s.cmd.Wait()
	})
}

// Log is what the server wrote, for failure messages.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "server.log"))
	return s.log.String() + string(b)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
