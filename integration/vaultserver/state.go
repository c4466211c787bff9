package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/physical"
	"github.com/hashicorp/vault/sdk/physical/file"
	"github.com/hashicorp/vault/sdk/physical/inmem"
	"github.com/hashicorp/vault/vault"
)

// With -state DIR the server survives restarts, for the booted-guest
// tier where a node reboots with its KMS: Vault's storage is a file
// backend under DIR/storage, and DIR/init.json keeps the unseal keys and
// root token of the first start, with which later starts unseal. The
// CA is kept too, and copied to DIR/ca.pem, a stable path for clients'
// configuration.

// persisted is DIR/init.json: the keys, and the CA (certificate and
// key, DER) that signs each start's server certificate, so clients that
// trust DIR/ca.pem keep trusting the restarted server.
type persisted struct {
	RootToken  string   `json:"root_token"`
	UnsealKeys [][]byte `json:"unseal_keys"`
	CACert     []byte   `json:"ca_cert"`
	CAKey      []byte   `json:"ca_key"`
}

// tls passes the saved CA to the cluster's options.
func (p *persisted) tls(opts *vault.TestClusterOptions) error {
	key, err := x509.ParseECPrivateKey(p.CAKey)
	if err != nil {
		return fmt.Errorf("init.json: CA key: %w", err)
	}
	opts.CACert, opts.CAKey = p.CACert, key
	return nil
}

// persistentStorage points coreConfig at DIR's storage and returns the
// saved keys, or nil on a first start.
func persistentStorage(coreConfig *vault.CoreConfig, dir string, logger hclog.Logger) (*persisted, error) {
	if err := os.MkdirAll(filepath.Join(dir, "storage"), 0o700); err != nil {
		return nil, err
	}
	phys, err := file.NewFileBackend(map[string]string{"path": filepath.Join(dir, "storage")}, logger)
	if err != nil {
		return nil, fmt.Errorf("storage in %s: %w", dir, err)
	}
	ha, err := inmem.NewInmemHA(nil, logger)
	if err != nil {
		return nil, err
	}
	coreConfig.Physical = phys
	coreConfig.HAPhysical = ha.(physical.HABackend)
	b, err := os.ReadFile(filepath.Join(dir, "init.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s/init.json: %w", dir, err)
	}
	return &p, nil
}

// unseal opens a restarted server with the saved keys.
func (p *persisted) unseal(cluster *vault.TestCluster) error {
	core := cluster.Cores[0]
	for _, k := range p.UnsealKeys {
		if _, err := vault.TestCoreUnseal(core.Core, k); err != nil {
			return fmt.Errorf("unseal: %w", err)
		}
	}
	cluster.SetBarrierKeys(p.UnsealKeys)
	cluster.SetRootToken(p.RootToken)
	return nil
}

// persist saves the keys after a first start and copies the CA.
func persist(cluster *vault.TestCluster, dir string) error {
	ca, err := os.ReadFile(cluster.CACertPEMFile)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca, 0o644); err != nil {
		return err
	}
	cluster.CACertPEMFile = filepath.Join(dir, "ca.pem")
	path := filepath.Join(dir, "init.json")
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	caKey, err := x509.MarshalECPrivateKey(cluster.CAKey)
	if err != nil {
		return err
	}
	b, err := json.Marshal(persisted{RootToken: cluster.RootToken, UnsealKeys: cluster.BarrierKeys, CACert: cluster.CACertBytes, CAKey: caKey})
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
