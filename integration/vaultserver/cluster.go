package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// With -cluster N the program is a supervisor: it starts N child
// processes of itself (-node I), each one Vault node with integrated
// storage (Raft) of its own, TLS from one shared CA, an API port and a
// cluster port (request forwarding and Raft) on 127.0.0.1. Node 0
// initialises the cluster; the others join it through Raft and unseal
// with its keys, so they are standbys that forward to the active node.
// Killing the active node's process (kill -9) makes the others elect a
// new leader, as in production.
//
// The supervisor prints one ClusterInfo line once every node is up and
// serves until SIGINT, SIGTERM or (with -exit-on-eof) end of input; then
// it closes its children's standard input, so each one stops, and
// removes the directory.

// NodeInfo is one node of the cluster.
type NodeInfo struct {
	// Address is the node's API URL.
	Address string `json:"address"`
	// ClusterAddress is the node's cluster (forwarding and Raft) URL.
	ClusterAddress string `json:"cluster_address"`
	// PID is the node's process: kill it to kill the node.
	PID int `json:"pid"`
	// NodeID is the node's Raft id.
	NodeID string `json:"node_id"`
	// Dir is the node's data directory and its working directory, so
	// that a file audit device enabled with a relative file_path
	// (audit devices are the cluster's configuration, the same on
	// every node) writes one log per node there.
	Dir string `json:"dir"`
}

// ClusterInfo is the one JSON line the supervisor prints. Its first
// fields are those of Info, node 0's, so a client of a single server
// reads a cluster too.
type ClusterInfo struct {
	Info
	// Addresses are every node's API URL, node 0 first.
	Addresses []string `json:"addresses"`
	// Nodes are the nodes, in the order of Addresses.
	Nodes []NodeInfo `json:"nodes"`
}

// nodeKeys is the file through which the supervisor hands node 0's keys
// to the joining nodes (mode 0600 in the supervisor's directory).
type nodeKeys struct {
	RootToken  string   `json:"root_token"`
	UnsealKeys [][]byte `json:"unseal_keys"`
}

func runCluster(n, raftMultiplier int, dir string, exitOnEOF, verbose bool) error {
	if n < 1 || n > 9 {
		return fmt.Errorf("-cluster %d: between 1 and 9 nodes", n)
	}
	if raftMultiplier < 1 || raftMultiplier > 10 {
		return fmt.Errorf("-raft-multiplier %d: between 1 and 10", raftMultiplier)
	}
	dir, cleanup, err := workDir(dir)
	if err != nil {
		return err
	}
	defer cleanup()
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)

	caFile, err := writeCA(dir)
	if err != nil {
		return err
	}
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var children []*child
	defer func() {
		for _, c := range children {
			c.stop()
		}
	}()
	info := ClusterInfo{}
	keysFile := filepath.Join(dir, "keys.json")
	for i := 0; i < n; i++ {
		nodeDir := filepath.Join(dir, fmt.Sprintf("node%d", i))
		if err := os.MkdirAll(nodeDir, 0o700); err != nil {
			return err
		}
		args := []string{"-node", strconv.Itoa(i),
			"-dir", nodeDir,
			"-listen", fmt.Sprintf("127.0.0.1:%d", ports[2*i]),
			"-cluster-port", strconv.Itoa(ports[2*i+1]),
			"-ca", filepath.Join(dir, "ca.json"),
			"-raft-multiplier", strconv.Itoa(raftMultiplier),
			"-exit-on-eof"}
		if verbose {
			args = append(args, "-v")
		}
		if i > 0 {
			args = append(args, "-join", info.Addresses[0], "-keys", keysFile)
		}
		c, node, err := startChild(self, nodeDir, args)
		if err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		children = append(children, c)
		if i == 0 {
			info.Info = node
			info.CAFile = caFile
			info.PID = os.Getpid()
			if err := writeKeys(keysFile, node); err != nil {
				return err
			}
		}
		info.Addresses = append(info.Addresses, node.Address)
		info.Nodes = append(info.Nodes, NodeInfo{
			Address:        node.Address,
			ClusterAddress: fmt.Sprintf("https://127.0.0.1:%d", ports[2*i+1]),
			PID:            node.PID,
			NodeID:         nodeID(i),
			Dir:            nodeDir,
		})
	}
	line, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if _, err := fmt.Printf("%s\n", line); err != nil {
		return err
	}
	serve(stop, exitOnEOF)
	return nil
}

func nodeID(i int) string { return fmt.Sprintf("node%d", i) }

// child is one node process, stopped by closing its standard input.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
}

func startChild(self, dir string, args []string) (*child, Info, error) {
	cmd := exec.Command(self, args...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	// A supervisor killed with SIGKILL cannot close the pipes; the
	// kernel then ends the children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, Info{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, Info{}, err
	}
	if err := cmd.Start(); err != nil {
		return nil, Info{}, err
	}
	c := &child{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	line := make(chan []byte, 1)
	go func() {
		b, _ := bufio.NewReader(stdout).ReadBytes('\n')
		line <- b
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var info Info
	select {
	case b := <-line:
		if err := json.Unmarshal(b, &info); err != nil {
			c.stop()
			return nil, Info{}, fmt.Errorf("did not start: %q", b)
		}
	case <-time.After(2 * time.Minute):
		c.stop()
		return nil, Info{}, fmt.Errorf("printed nothing in 2 minutes")
	}
	return c, info, nil
}

func (c *child) stop() {
	_ = c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// writeCA makes the cluster's CA: DIR/ca.json (certificate and key, read
// by the nodes) and DIR/ca.pem (for clients). Returns ca.pem's path.
func writeCA(dir string) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "atrest test vault cluster CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(persisted{CACert: der, CAKey: keyDER})
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.json"), b, 0o600); err != nil {
		return "", err
	}
	pemFile := filepath.Join(dir, "ca.pem")
	return pemFile, os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeKeys(path string, node Info) error {
	k := nodeKeys{RootToken: node.RootToken}
	for _, s := range node.UnsealKeys {
		b, err := decodeKey(s)
		if err != nil {
			return err
		}
		k.UnsealKeys = append(k.UnsealKeys, b)
	}
	b, err := json.Marshal(k)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// freePorts asks the kernel for n free loopback ports. Each is free when
// returned; the nodes bind them moments later.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitUnsealed waits until a joining node has finished its Raft join and
// unseal, as a standby of the active node.
func waitUnsealed(ctx context.Context, sealed func() bool) error {
	for sealed() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("node still sealed after joining: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
