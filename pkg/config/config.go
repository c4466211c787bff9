// Package config owns atrest's configuration file: its schema, defaults,
// validation and the rules for reading it safely.
//
// The file is YAML (default /etc/atrest/atrest.yaml). Unknown keys are
// errors, and every error names the file, the line and the field, so a
// provisioning script's typo is caught at the first run rather than at the
// next boot. A file that carries credentials must not be readable by other
// users; Load refuses it. Command-line flags and VAULT_* variables are
// applied on top by the callers that own them.
package config

import (
	"slices"
	"time"

	"github.com/atrest/atrest/pkg/policy"
)

// DefaultPath is where atrest and atrestd look for the file.
const DefaultPath = "/etc/atrest/atrest.yaml"

// Backend names, as written in the file and in LUKS2 tokens.
const (
	BackendLocal        = "local"
	BackendVaultTransit = "vault-transit"
	BackendVaultKV      = "vault-kv"
	BackendKMIP         = "kmip"
	BackendTPM          = "tpm"
)

// Recovery policies for new volumes.
const (
	RecoveryEscrow = "escrow" // stored in Vault KV, write-only for the node
	RecoveryPrint  = "print"  // printed once at format time
	RecoveryNone   = "none"   // no recovery keyslot
)

// Config is the whole file after defaults and validation.
type Config struct {
	// KMS selects the backend that wraps platform secrets for new volumes
	// without a policy.
	KMS string `yaml:"kms"`
	// Policy, when set, is the unlock policy of new volumes that have none
	// of their own: any-of, all-of or k-of-n over the factors local,
	// vault and kmip, each configured by its own section below
	// (docs/policy.md). It takes precedence over KMS.
	Policy *policy.Policy `yaml:"policy"`
	// Local configures the local keystore backend.
	Local Local `yaml:"local"`
	// Vault configures both Vault backends and recovery escrow.
	Vault Vault `yaml:"vault"`
	// KMIP configures the KMIP backend (docs/kmip.md).
	KMIP KMIP `yaml:"kmip"`
	// TPM configures the TPM-sealed KEK (kms: tpm; docs/tpm.md).
	TPM TPM `yaml:"tpm"`
	// KMSDefaulted: the file named no kms (or there is no file), so KMS
	// holds the default, local; new volumes then go under the TPM when
	// the machine has one (pkg/kms/backends).
	KMSDefaulted bool `yaml:"-"`
	// Recovery is the recovery-key policy for new volumes.
	Recovery Recovery `yaml:"recovery"`
	// StateDir holds header backups and operation journals.
	StateDir string `yaml:"state_dir"`
	// Volumes are the volumes atrestd manages by name, in addition to
	// every device whose header carries an atrest token.
	Volumes []Volume `yaml:"volumes"`
	// Daemon tunes atrestd.
	Daemon Daemon `yaml:"daemon"`

	// Path is the file the configuration was read from ("" for defaults).
	Path string `yaml:"-"`
}

// Daemon tunes atrestd: how long boot waits, how it retries and what it
// does in the background.
type Daemon struct {
	// ReadyTimeout bounds how long atrestd holds READY=1 back while
	// required volumes are still locked (an unreachable KMS). After it,
	// atrestd reports ready with a degraded status, so boot goes on, and
	// keeps retrying in the background.
	ReadyTimeout time.Duration `yaml:"ready_timeout"`
	// RetryMin and RetryMax bound the jittered exponential backoff between
	// unlock attempts of a locked volume.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
	// Rescan is how often atrestd looks for new devices besides the
	// kernel's hotplug events.
	Rescan time.Duration `yaml:"rescan"`
	// Rewrap is how often atrestd compares token key versions with the KMS
	// and rewraps stale tokens.
	Rewrap time.Duration `yaml:"rewrap"`
	// RequireDiscovered makes every volume found by its atrest token at
	// start-up hold readiness like a configured volume (default true).
	RequireDiscovered *bool `yaml:"require_discovered"`
	// StartJitter delays atrestd's first unlock by a random time up to
	// this much (default 0: none), so that a datacenter powering on does
	// not send every node's unlock to Vault in the same second.
	StartJitter time.Duration `yaml:"start_jitter"`
	// Metrics is where the Prometheus endpoint listens:
	// "unix:/run/atrest/metrics.sock" (default), "127.0.0.1:PORT", or
	// "off".
	Metrics string `yaml:"metrics"`
}

// RequiresDiscovered reports whether volumes found by their token hold
// readiness (default true).
func (d Daemon) RequiresDiscovered() bool {
	return d.RequireDiscovered == nil || *d.RequireDiscovered
}

// Local is the local keystore backend.
type Local struct {
	// Keystore is the root-only file holding the KEK versions.
	Keystore string `yaml:"keystore"`
}

// Vault configures the connection, authentication and engines.
type Vault struct {
	Address string `yaml:"address"`
	// Addresses are a Vault cluster's nodes, tried in turn (address, if
	// set too, first); docs/fleet.md.
	Addresses []string `yaml:"addresses"`
	// MaxConcurrency bounds requests in flight to each address.
	MaxConcurrency int           `yaml:"max_concurrency"`
	Namespace      string        `yaml:"namespace"`
	CAFile         string        `yaml:"ca_file"`
	TLSServerName  string        `yaml:"tls_server_name"`
	Auth           VaultAuth     `yaml:"auth"`
	Transit        VaultTransit  `yaml:"transit"`
	KV             VaultKV       `yaml:"kv"`
	Escrow         VaultEscrow   `yaml:"escrow"`
	Timeout        time.Duration `yaml:"timeout"`  // per call
	Deadline       time.Duration `yaml:"deadline"` // all retries of one operation
	// ElectionWait bounds the wait before the one retry of an operation
	// that found the cluster electing a new active node; the wait ends
	// when a node reports itself active (docs/fleet.md).
	ElectionWait time.Duration `yaml:"election_wait"`
}

// KMIP is a key manager or HSM reached over KMIP with mutual TLS.
type KMIP struct {
	// Address is host:port; the port defaults to 5696.
	Address string `yaml:"address"`
	// ServerName is the name the server certificate must carry; default
	// the address's host.
	ServerName string `yaml:"server_name"`
	// CAFile signs the server certificate; CertFile and KeyFile are the
	// node's client certificate and its root-only private key.
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Key is the Name of the key objects; "{hostname}" in it becomes the
	// node's host name, so one line serves a per-node key
	// ("atrest-{hostname}") or a fleet key ("atrest-fleet"). Default
	// "atrest-{hostname}".
	Key string `yaml:"key"`
	// Create lets atrest create and activate the key when no object has
	// the name yet (default true).
	Create *bool `yaml:"create"`
	// DestroyOnErase: erasing the node's last volume under the key also
	// revokes and destroys the key's objects in the key manager (a
	// decommission). Only for a per-node key ("{hostname}" in Key): a
	// fleet key serves other nodes' volumes. Default false.
	DestroyOnErase bool `yaml:"destroy_on_erase"`
	// Timeout bounds one request, Deadline all retries of an operation.
	Timeout  time.Duration `yaml:"timeout"`
	Deadline time.Duration `yaml:"deadline"`
}

// Creates reports whether atrest may create the key (default true).
func (k KMIP) Creates() bool { return k.Create == nil || *k.Create }

// VaultAuth selects how atrest logs in.
type VaultAuth struct {
	// Method is "token" or "approle".
	Method string `yaml:"method"`
	// TokenFile holds a Vault token (method token); VAULT_TOKEN overrides.
	TokenFile string `yaml:"token_file"`
	// RoleID identifies the AppRole; it is a credential half.
	RoleID string `yaml:"role_id"`
	// RoleIDFile holds the role id instead of RoleID.
	RoleIDFile string `yaml:"role_id_file"`
	// SecretIDFile holds the AppRole secret id.
	SecretIDFile string `yaml:"secret_id_file"`
	// WrappedSecretID means SecretIDFile holds a response-wrapping token
	// that is unwrapped on first use.
	WrappedSecretID bool `yaml:"wrapped_secret_id"`
	// Mount is the AppRole auth mount path.
	Mount string `yaml:"mount"`
}

// VaultTransit is the transit engine and key that wrap platform secrets.
type VaultTransit struct {
	Mount string `yaml:"mount"`
	Key   string `yaml:"key"`
}

// VaultKV is the KV v2 engine used for raw secrets and recovery escrow.
type VaultKV struct {
	Mount string `yaml:"mount"`
	// Prefix is the path under the mount; secrets live at
	// <mount>/<prefix>/<hostname>/<volume uuid>.
	Prefix string `yaml:"prefix"`
	// Hostname overrides the node's host name in KV paths.
	Hostname string `yaml:"hostname"`
	// Version is the KV engine version, 2 (default) or 1.
	Version int `yaml:"version"`
}

// VaultEscrow is where recovery keys are escrowed: a KV path the node may
// create under but never read (docs/vault.md has the policy).
type VaultEscrow struct {
	// Mount defaults to the KV mount.
	Mount string `yaml:"mount"`
	// Prefix defaults to "atrest-escrow"; keys land at
	// <mount>/<prefix>/<hostname>/<volume uuid>/<id>.
	Prefix string `yaml:"prefix"`
}

// Recovery is the recovery-key policy.
type Recovery struct {
	Mode string `yaml:"mode"`
}

// Volume is one managed volume.
type Volume struct {
	// Name is the mapping name, /dev/mapper/NAME.
	Name string `yaml:"name"`
	// Device is the backing device path; UUID may be used instead.
	Device string `yaml:"device"`
	// UUID is the LUKS2 UUID.
	UUID string `yaml:"uuid"`
	// Required volumes hold atrestd's READY=1 until they are open.
	Required *bool `yaml:"required"`
	// Discard passes discards through to the device (allow_discards).
	Discard bool `yaml:"discard"`
	// Policy is this volume's unlock policy; it overrides the fleet
	// policy and KMS.
	Policy *policy.Policy `yaml:"policy"`
	// Format lets atrestd format the device on first boot if it is blank
	// (never when it carries any signature).
	Format bool `yaml:"format"`
}

// IsRequired reports whether the volume holds up readiness (default true).
func (v Volume) IsRequired() bool { return v.Required == nil || *v.Required }

// UsesVault reports whether the configuration needs a Vault server: a
// Vault backend, or recovery keys escrowed in Vault KV.
func (c *Config) UsesVault() bool {
	return c.KMS == BackendVaultTransit || c.KMS == BackendVaultKV || c.Recovery.Mode == RecoveryEscrow || c.policyNames(policy.FactorVault)
}

// UsesKMIP reports whether the configuration needs a KMIP server.
func (c *Config) UsesKMIP() bool { return c.KMS == BackendKMIP || c.policyNames(policy.FactorKMIP) }

// PolicyFor returns the unlock policy of new key material for the volume
// called name: its own, else the fleet's, else nil (the backend kms names
// alone).
func (c *Config) PolicyFor(name string) *policy.Policy {
	for _, v := range c.Volumes {
		if v.Name == name && v.Policy != nil {
			return v.Policy
		}
	}
	return c.Policy
}

// PolicyFactors lists every factor the fleet policy and the volumes'
// policies name, each once, in order of first mention.
func (c *Config) PolicyFactors() []string {
	var out []string
	for _, p := range append([]*policy.Policy{c.Policy}, c.volumePolicies()...) {
		if p == nil {
			continue
		}
		for _, f := range p.Factors() {
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return out
}

func (c *Config) volumePolicies() []*policy.Policy {
	out := make([]*policy.Policy, len(c.Volumes))
	for i, v := range c.Volumes {
		out[i] = v.Policy
	}
	return out
}

// policyNames reports whether any policy in the file names factor.
func (c *Config) policyNames(factor string) bool {
	return slices.Contains(c.PolicyFactors(), factor)
}
