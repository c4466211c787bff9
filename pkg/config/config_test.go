package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultsWithoutFile(t *testing.T) {
	c, err := Parse(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.KMS != BackendLocal || c.Local.Keystore != "/var/lib/atrest/kek" || c.Recovery.Mode != RecoveryPrint {
		t.Fatalf("defaults: kms=%q keystore=%q recovery=%q", c.KMS, c.Local.Keystore, c.Recovery.Mode)
	}
	if d := c.Daemon; d.ReadyTimeout != time.Minute || d.Metrics != "unix:/run/atrest/metrics.sock" || !d.RequiresDiscovered() || d.RetryMin != time.Second || d.RetryMax != 30*time.Second {
		t.Fatalf("daemon defaults: %+v", d)
	}
}

func TestVaultExample(t *testing.T) {
	data, err := os.ReadFile("testdata/vault.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(data, "testdata/vault.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Vault.Auth.Method != "approle" || !c.Vault.Auth.WrappedSecretID {
		t.Errorf("auth = %+v", c.Vault.Auth)
	}
	if c.Vault.Transit.Mount != "transit" || c.Vault.Transit.Key != "atrest-node7" {
		t.Errorf("transit = %+v", c.Vault.Transit)
	}
	if c.Vault.Timeout != 5*time.Second || c.Vault.Deadline != time.Minute {
		t.Errorf("timeout %s deadline %s", c.Vault.Timeout, c.Vault.Deadline)
	}
	if c.Recovery.Mode != RecoveryEscrow {
		t.Errorf("recovery defaults to %q with Vault, want escrow", c.Recovery.Mode)
	}
	if len(c.Volumes) != 2 || !c.Volumes[0].IsRequired() || c.Volumes[1].IsRequired() || !c.Volumes[1].Discard {
		t.Errorf("volumes = %+v", c.Volumes)
	}
}

// kms: kmip needs no Vault: recovery keys are printed by default, and the
// kmip section's defaults apply.
func TestKMIPExample(t *testing.T) {
	c, err := Parse([]byte("kms: kmip\nkmip:\n  address: km.example\n  ca_file: /etc/atrest/kmip-ca.pem\n  cert_file: /etc/atrest/node.crt\n  key_file: /etc/atrest/node.key\n"), "kmip.yaml")
	if err != nil {
		t.Fatal(err)
	}
	k := c.KMIP
	if c.KMS != BackendKMIP || c.UsesVault() || c.Recovery.Mode != RecoveryPrint {
		t.Fatalf("kms %q, uses vault %v, recovery %q", c.KMS, c.UsesVault(), c.Recovery.Mode)
	}
	if k.Key != "atrest-{hostname}" || !k.Creates() || k.Timeout != 10*time.Second || k.Deadline != time.Minute {
		t.Fatalf("kmip defaults: %+v", k)
	}
}

// Every error names the file, the line and the field a user must fix.
func TestErrorsNameLineAndField(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"unknown key", "kms: local\nlocal:\n  keystor: /x\n", "bad.yaml:3: field keystor not found"},
		{"unknown backend", "\n\nkms: aws\n", "bad.yaml:3: kms: unknown backend \"aws\""},
		{"vault without address", "kms: vault-transit\n", "bad.yaml:1: kms: needs vault.address"},
		{"bad duration", "vault:\n  timeout: soon\n", "bad.yaml:2:"},
		{"cluster address not a URL", "kms: vault-transit\nvault:\n  addresses:\n    - https://v1:8200\n    - v2:8200\n", "bad.yaml:5: vault.addresses[1]: \"v2:8200\" is not an http(s) URL"},
		{"cluster address twice", "kms: vault-transit\nvault:\n  address: https://v1:8200\n  addresses:\n    - https://v1:8200/\n", "bad.yaml:5: vault.addresses[0]: \"https://v1:8200/\" is listed twice"},
		{"negative election wait", "kms: vault-transit\nvault:\n  address: https://v1:8200\n  election_wait: -5s\n", "bad.yaml:4: vault.election_wait: must be positive"},
		{"negative start jitter", "daemon:\n  start_jitter: -5s\n", "bad.yaml:2: daemon.start_jitter: must be a positive duration"},
		{"duplicate volume", "volumes:\n  - name: a\n    device: /dev/x\n  - name: a\n    device: /dev/y\n", "bad.yaml:4: volumes[1].name: \"a\" is also the name of volumes[0]"},
		{"bad volume name", "volumes:\n  - name: a/b\n    device: /dev/x\n", "bad.yaml:2: volumes[0].name: volume name \"a/b\": character '/' not allowed"},
		{"volume without device", "volumes:\n  - name: a\n", "bad.yaml:2: volumes[0]: needs device or uuid"},
		{"approle without secret", "vault:\n  address: http://v\n  auth:\n    role_id: r\n", "bad.yaml:3: vault.auth: approle needs secret_id_file"},
		{"bad recovery", "recovery:\n  mode: email\n", "bad.yaml:2: recovery.mode: unknown mode \"email\""},
		{"not yaml", "kms: [\n", "bad.yaml:"},
		{"metrics on the network", "daemon:\n  metrics: 0.0.0.0:9100\n", "bad.yaml:2: daemon.metrics: \"0.0.0.0:9100\": metrics listen on loopback only"},
		{"relative metrics socket", "daemon:\n  metrics: unix:m.sock\n", "bad.yaml:2: daemon.metrics: \"unix:m.sock\": the socket path must be absolute"},
		{"negative retry", "daemon:\n  retry_min: -1s\n", "bad.yaml:2: daemon.retry_min: must be a positive duration"},
		{"kmip without address", "kms: kmip\n", "bad.yaml:1: kms: kmip needs kmip.address"},
		{"kmip without client key", "kms: kmip\nkmip:\n  address: km:5696\n  ca_file: /ca\n  cert_file: /crt\n", "bad.yaml:1: kms: kmip needs kmip.key_file"},
		{"kmip relative ca", "kms: kmip\nkmip:\n  address: km\n  ca_file: ca.pem\n  cert_file: /c\n  key_file: /k\n", "bad.yaml:4: kmip.ca_file: must be an absolute path"},
		{"kmip deadline", "kms: kmip\nkmip:\n  address: km\n  ca_file: /a\n  cert_file: /c\n  key_file: /k\n  timeout: 1m\n  deadline: 10s\n", "bad.yaml:8: kmip.deadline: 10s is shorter than kmip.timeout 1m0s"},
		{"kmip destroy with a fleet key", "kms: kmip\nkmip:\n  address: km\n  ca_file: /a\n  cert_file: /c\n  key_file: /k\n  key: atrest-fleet\n  destroy_on_erase: true\n", "bad.yaml:8: kmip.destroy_on_erase: needs a per-node key"},
		{"retry bounds", "daemon:\n  retry_min: 1m\n  retry_max: 10s\n", "bad.yaml:3: daemon.retry_max: 10s is shorter than daemon.retry_min 1m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), "bad.yaml")
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadRefusesInsecureFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, doc string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(doc), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	creds := "vault:\n  address: http://v\n  auth:\n    role_id: r\n    secret_id_file: /s\n"
	for _, tc := range []struct {
		name, doc string
		mode      os.FileMode
		refused   bool
	}{
		{"world-readable with role id", creds, 0o644, true},
		{"group-writable", "kms: local\n", 0o664, true},
		{"world-writable", "kms: local\n", 0o646, true},
		{"private with role id", creds, 0o600, false},
		{"world-readable without credentials", "kms: local\n", 0o644, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(write(strings.ReplaceAll(tc.name, " ", "-"), tc.doc, tc.mode))
			if tc.refused != errors.Is(err, ErrInsecure) {
				t.Fatalf("mode %04o: err = %v, refused want %v", tc.mode, err, tc.refused)
			}
			if tc.refused && !strings.Contains(err.Error(), "chmod") && !strings.Contains(err.Error(), "owned") {
				t.Fatalf("refusal gives no fix: %v", err)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "absent.yaml")); err == nil {
		t.Fatal("a missing explicit config file was accepted")
	}
}

// A file that holds only comments (the packaged /etc/atrest/atrest.yaml
// before anyone edits it) is the defaults, not an error.
func TestCommentsOnlyFileIsDefaults(t *testing.T) {
	p := filepath.Join(t.TempDir(), "atrest.yaml")
	if err := os.WriteFile(p, []byte("# nothing set yet\n#kms: vault-transit\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.KMS != BackendLocal || c.StateDir != "/var/lib/atrest" {
		t.Fatalf("kms %q state_dir %q, want the defaults", c.KMS, c.StateDir)
	}
}
