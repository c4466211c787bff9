package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/helper/namespace"
	"github.com/hashicorp/vault/physical/raft"
	"github.com/hashicorp/vault/sdk/physical"
	"github.com/hashicorp/vault/vault"
)

// nodeFlags are the internal flags with which the -cluster supervisor
// starts each node.
type nodeFlags struct {
	index       int
	clusterPort int
	caFile      string
	join        string
	keysFile    string
	// raftMultiplier is Raft's performance_multiplier.
	raftMultiplier int
}

// defaultRaftMultiplier is Raft's performance_multiplier unless
// -raft-multiplier says otherwise: Vault's default is 5, production
// guides recommend 1. It scales Raft's heartbeat and election timeouts
// (1 s each, times the multiplier): a follower stands for election 1-2
// times the multiplier seconds after the last heartbeat, then the new
// leader's Vault core sets itself up as active. 2 keeps an election
// within a few seconds without spurious ones on a loaded CI machine
// (docs/testing.md has the measured times).
const defaultRaftMultiplier = 2

// runNode runs one node of a -cluster: Vault's test core with Raft
// storage in DIR/raft, its API on -listen and its cluster port on
// -cluster-port. Node 0 initialises; the others join -join and unseal
// with the keys in -keys.
func runNode(n nodeFlags, dir, listen string, exitOnEOF, verbose bool) error {
	if dir == "" || listen == "" || n.clusterPort == 0 || n.caFile == "" {
		return fmt.Errorf("-node needs -dir, -listen, -cluster-port and -ca")
	}
	if err := os.MkdirAll(filepath.Join(dir, "raft"), 0o700); err != nil {
		return err
	}
	logOut := io.Discard
	logger := hclog.NewNullLogger()
	if verbose {
		logOut = os.Stderr
		logger = hclog.New(&hclog.LoggerOptions{Name: nodeID(n.index), Level: hclog.Info, Output: os.Stderr})
	}
	t := newRuntimeTB(dir, logOut)
	defer t.runCleanups()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)

	coreConfig := backends()
	backend, err := raft.NewRaftBackend(map[string]string{
		"path":                   filepath.Join(dir, "raft"),
		"node_id":                nodeID(n.index),
		"performance_multiplier": strconv.Itoa(n.raftMultiplier),
	}, logger.Named("raft"))
	if err != nil {
		return fmt.Errorf("raft storage: %w", err)
	}
	coreConfig.Physical = backend
	coreConfig.HAPhysical = backend.(physical.HABackend)
	// Without autopilot a joining node is a voter at once (autopilot
	// would hold it a non-voter for its stabilisation time, 10 s), so
	// the cluster tolerates the loss of one node as soon as it is up.
	coreConfig.DisableAutopilot = true

	b, err := os.ReadFile(n.caFile)
	if err != nil {
		return err
	}
	var ca persisted
	if err := json.Unmarshal(b, &ca); err != nil {
		return fmt.Errorf("%s: %w", n.caFile, err)
	}
	opts := clusterOptions(dir, listen, logger, n.join != "")
	opts.BaseClusterListenPort = n.clusterPort
	if err := ca.tls(opts); err != nil {
		return err
	}
	cluster := vault.NewTestCluster(t, coreConfig, opts)
	defer cluster.Cleanup()
	core := cluster.Cores[0]
	if n.join == "" {
		vault.TestWaitActive(t, core.Core)
	} else if err := join(cluster, n, ca.CACert); err != nil {
		return err
	}
	sealOnSignal(core.Core, logOut)
	if err := printInfo(cluster); err != nil {
		return err
	}
	serve(stop, exitOnEOF)
	return nil
}

// join makes the node a Raft voter of the cluster at n.join and unseals
// it with the cluster's keys.
func join(cluster *vault.TestCluster, n nodeFlags, caDER []byte) error {
	b, err := os.ReadFile(n.keysFile)
	if err != nil {
		return err
	}
	var keys nodeKeys
	if err := json.Unmarshal(b, &keys); err != nil {
		return fmt.Errorf("%s: %w", n.keysFile, err)
	}
	core := cluster.Cores[0].Core
	ctx, cancel := context.WithTimeout(namespace.RootContext(context.Background()), 2*time.Minute)
	defer cancel()
	leader := []*raft.LeaderJoinInfo{{
		LeaderAPIAddr: n.join,
		LeaderCACert:  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
	}}
	if _, err := core.JoinRaftCluster(ctx, leader, false); err != nil {
		return fmt.Errorf("raft join %s: %w", n.join, err)
	}
	for _, k := range keys.UnsealKeys {
		if _, err := core.Unseal(k); err != nil {
			return fmt.Errorf("unseal after join: %w", err)
		}
	}
	if err := waitUnsealed(ctx, core.Sealed); err != nil {
		return err
	}
	cluster.SetBarrierKeys(keys.UnsealKeys)
	cluster.SetRootToken(keys.RootToken)
	return nil
}

// sealOnSignal seals the node on SIGUSR1. Vault's API seals only the
// active node (a standby answers "cannot seal when in standby mode;
// please restart instead", and a restarted node starts sealed); the
// signal stands for that restart, so a test can seal every node.
func sealOnSignal(core *vault.Core, log io.Writer) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			if err := vault.TestCoreSeal(core); err != nil {
				fmt.Fprintln(log, "seal:", err)
			}
		}
	}()
}
