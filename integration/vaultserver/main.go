// Command vaultserver runs a real HashiCorp Vault server for atrest's tests:
// Vault's own in-process test cluster (one core, TLS on 127.0.0.1, a CA of
// its own, an in-memory storage backend) with the transit and kv secrets
// engines and the approle auth method compiled in, and KV version 2 mounted
// at secret/.
//
// Once Vault is unsealed and active it prints one JSON line on standard
// output (see Info) and serves until SIGINT or SIGTERM, or, with
// -exit-on-eof, until its standard input closes, so a test that dies never
// leaves a server behind. Seal it through the API (sys/seal with the root
// token) and unseal it with the printed keys (sys/unseal).
//
// It lives in its own Go module so that Vault's server packages (some 800
// modules) never enter atrest's main go.mod, and it builds with
// CGO_ENABLED=0 as a static binary for the VM boot tier.
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	hclog "github.com/hashicorp/go-hclog"
	kv "github.com/hashicorp/vault-plugin-secrets-kv"
	"github.com/hashicorp/vault/builtin/credential/approle"
	"github.com/hashicorp/vault/builtin/logical/transit"
	vaulthttp "github.com/hashicorp/vault/http"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/vault"
)

// Info is the one JSON line printed once the server is ready.
type Info struct {
	// Address is the server's URL, https://127.0.0.1:PORT.
	Address string `json:"address"`
	// RootToken is a root token for setting up the server.
	RootToken string `json:"root_token"`
	// CAFile is the PEM file of the CA that signed the server's
	// certificate; it is removed when the server stops.
	CAFile string `json:"ca_file"`
	// UnsealKeys are the Shamir key shares (base64), all of which
	// sys/unseal needs after a seal.
	UnsealKeys []string `json:"unseal_keys"`
	// PID is this process.
	PID int `json:"pid"`
}

func main() {
	dir := flag.String("dir", "", "directory for the server's files (default: a new temporary directory, removed on exit)")
	listen := flag.String("listen", "", "fixed listen address 127.0.0.1:PORT (default: a free port)")
	state := flag.String("state", "", "keep Vault's storage, unseal keys and root token in `dir` across restarts (default: in memory, gone on exit)")
	exitOnEOF := flag.Bool("exit-on-eof", false, "stop when standard input reaches end of file")
	verbose := flag.Bool("v", false, "log Vault's messages to standard error")
	clusterN := flag.Int("cluster", 0, "run `N` Vault nodes with integrated storage (Raft), one process each (see cluster.go)")
	var n nodeFlags
	flag.IntVar(&n.raftMultiplier, "raft-multiplier", defaultRaftMultiplier, "with -cluster: Raft's performance_multiplier `M` (Vault's default 5, production guides 1)")
	flag.IntVar(&n.index, "node", -1, "internal (-cluster): run node `I` of a cluster")
	flag.IntVar(&n.clusterPort, "cluster-port", 0, "internal (-cluster): the node's cluster port")
	flag.StringVar(&n.caFile, "ca", "", "internal (-cluster): the cluster's CA (ca.json)")
	flag.StringVar(&n.join, "join", "", "internal (-cluster): API `URL` of the node to join through Raft")
	flag.StringVar(&n.keysFile, "keys", "", "internal (-cluster): the file with the cluster's unseal keys and root token")
	flag.Parse()
	var err error
	switch {
	case *clusterN > 0:
		err = runCluster(*clusterN, n.raftMultiplier, *dir, *exitOnEOF, *verbose)
	case n.index >= 0:
		err = runNode(n, *dir, *listen, *exitOnEOF, *verbose)
	default:
		err = run(*dir, *listen, *state, *exitOnEOF, *verbose)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vaultserver:", err)
		os.Exit(1)
	}
}

func run(dir, listen, state string, exitOnEOF, verbose bool) error {
	if listen != "" {
		if _, _, err := net.SplitHostPort(listen); err != nil {
			return fmt.Errorf("-listen: %w", err)
		}
	}
	dir, cleanup, err := workDir(dir)
	if err != nil {
		return err
	}
	defer cleanup()
	logOut := io.Discard
	logger := hclog.NewNullLogger()
	if verbose {
		logOut = os.Stderr
		logger = hclog.New(&hclog.LoggerOptions{Name: "vault", Level: hclog.Info, Output: os.Stderr})
	}
	t := newRuntimeTB(dir, logOut)
	defer t.runCleanups()

	// Signals are caught before the cluster starts so that a SIGTERM during
	// start-up still tears it down.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)

	coreConfig := backends()
	var saved *persisted
	if state != "" {
		var err error
		if saved, err = persistentStorage(coreConfig, state, logger); err != nil {
			return err
		}
	}
	opts := clusterOptions(dir, listen, logger, saved != nil)
	if saved != nil {
		if err := saved.tls(opts); err != nil {
			return err
		}
	}
	cluster := vault.NewTestCluster(t, coreConfig, opts)
	defer cluster.Cleanup()
	core := cluster.Cores[0]
	if saved != nil {
		if err := saved.unseal(cluster); err != nil {
			return err
		}
	}
	vault.TestWaitActive(t, core.Core)
	if state != "" {
		if err := persist(cluster, state); err != nil {
			return err
		}
	}

	if err := printInfo(cluster); err != nil {
		return err
	}
	serve(stop, exitOnEOF)
	return nil
}

// backends is the core configuration every server shares: the engines
// atrest's tests use.
func backends() *vault.CoreConfig {
	return &vault.CoreConfig{
		LogicalBackends: map[string]logical.Factory{
			"transit": transit.Factory,
			"kv":      kv.Factory,
		},
		CredentialBackends: map[string]logical.Factory{
			"approle": approle.Factory,
		},
	}
}

// workDir returns dir, or a new temporary directory that cleanup
// removes.
func workDir(dir string) (string, func(), error) {
	if dir != "" {
		return dir, func() {}, nil
	}
	d, err := os.MkdirTemp("", "atrest-vaultserver-")
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// clusterOptions are the options of Vault's test cluster every server
// shares: one core, TLS on listen (or a free port), KV v2 at secret/, no
// default quotas.
func clusterOptions(dir, listen string, logger hclog.Logger, skipInit bool) *vault.TestClusterOptions {
	return &vault.TestClusterOptions{
		SkipInit:          skipInit,
		HandlerFunc:       vaulthttp.Handler,
		NumCores:          1,
		KVVersion:         "2",
		TempDir:           filepath.Join(dir, "cluster"),
		Logger:            logger,
		BaseListenAddress: listen,
		NoDefaultQuotas:   true,
	}
}

// printInfo prints the ready line of a server.
func printInfo(cluster *vault.TestCluster) error {
	info := Info{
		Address:   cluster.Cores[0].Client.Address(),
		RootToken: cluster.RootToken,
		CAFile:    cluster.CACertPEMFile,
		PID:       os.Getpid(),
	}
	for _, k := range cluster.BarrierKeys {
		info.UnsealKeys = append(info.UnsealKeys, base64.StdEncoding.EncodeToString(k))
	}
	line, err := json.Marshal(info)
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", line)
	return err
}

// serve waits for a stop signal, or with exitOnEOF for the end of
// standard input.
func serve(stop <-chan os.Signal, exitOnEOF bool) {
	eof := make(chan struct{})
	if exitOnEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(eof)
		}()
	}
	select {
	case <-stop:
	case <-eof:
	}
}

func decodeKey(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
