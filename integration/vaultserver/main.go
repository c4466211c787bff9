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
	flag.Parse()
	if err := run(*dir, *listen, *state, *exitOnEOF, *verbose); err != nil {
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
	if dir == "" {
		d, err := os.MkdirTemp("", "atrest-vaultserver-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
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

	coreConfig := &vault.CoreConfig{
		LogicalBackends: map[string]logical.Factory{
			"transit": transit.Factory,
			"kv":      kv.Factory,
		},
		CredentialBackends: map[string]logical.Factory{
			"approle": approle.Factory,
		},
	}
	var saved *persisted
	if state != "" {
		var err error
		if saved, err = persistentStorage(coreConfig, state, logger); err != nil {
			return err
		}
	}
	opts := &vault.TestClusterOptions{
		SkipInit:          saved != nil,
		HandlerFunc:       vaulthttp.Handler,
		NumCores:          1,
		KVVersion:         "2",
		TempDir:           filepath.Join(dir, "cluster"),
		Logger:            logger,
		BaseListenAddress: listen,
		NoDefaultQuotas:   true,
	}
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

	info := Info{
		Address:   core.Client.Address(),
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
	if _, err := fmt.Printf("%s\n", line); err != nil {
		return err
	}

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
	return nil
}
