// Command vaultprovision sets up the guest's test Vault for atrest the
// way docs/vault.md tells an operator to: it waits for the server that
// atrest-test-vault.service runs (integration/vaultserver with -state),
// mounts transit and creates the node's key (derived, so each secret is
// bound to its volume), loads the atrest-node policy
// from the file given, and writes a periodic node token to the token
// file atrest's configuration names.
//
//	vaultprovision STATE_DIR POLICY_FILE TOKEN_FILE
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/vault/api"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: vaultprovision STATE_DIR POLICY_FILE TOKEN_FILE")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3]); err != nil {
		fmt.Fprintln(os.Stderr, "vaultprovision:", err)
		os.Exit(1)
	}
}

func run(state, policyFile, tokenFile string) error {
	var init struct {
		RootToken string `json:"root_token"`
	}
	deadline := time.Now().Add(3 * time.Minute)
	var c *api.Client
	for {
		b, err := os.ReadFile(filepath.Join(state, "init.json"))
		if err == nil && json.Unmarshal(b, &init) == nil {
			conf := api.DefaultConfig()
			conf.Address = "https://127.0.0.1:8200"
			if err = conf.ConfigureTLS(&api.TLSConfig{CACert: filepath.Join(state, "ca.pem")}); err == nil {
				if c, err = api.NewClient(conf); err == nil {
					c.SetToken(init.RootToken)
					var h *api.HealthResponse
					if h, err = c.Sys().Health(); err == nil && h.Initialized && !h.Sealed && !h.Standby {
						break
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vault not up after 3 minutes: %v", err)
		}
		time.Sleep(time.Second)
	}
	if err := c.Sys().Mount("transit", &api.MountInput{Type: "transit"}); err != nil {
		return err
	}
	if _, err := c.Logical().Write("transit/keys/atrest-node7", map[string]any{"derived": true}); err != nil {
		return err
	}
	policy, err := os.ReadFile(policyFile)
	if err != nil {
		return err
	}
	if err := c.Sys().PutPolicy("atrest-node", string(policy)); err != nil {
		return err
	}
	tok, err := c.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"atrest-node"}, Period: "24h", DisplayName: "node7"})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(tokenFile), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(tokenFile, []byte(tok.Auth.ClientToken+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Println("vault provisioned: transit key atrest-node7, policy atrest-node, node token in", tokenFile)
	return nil
}
