package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/atrest/atrest/pkg/policy"
)

// validate checks the defaulted configuration; root, when not nil, is the
// parsed document used to find the line of a bad field.
func (c *Config) validate(root *yaml.Node) error {
	bad := func(field, format string, args ...any) error {
		return &Error{Path: c.Path, Line: lineOf(root, field), Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	switch c.KMS {
	case BackendLocal, BackendVaultTransit, BackendVaultKV, BackendKMIP, BackendTPM:
	default:
		return bad("kms", "unknown backend %q (want %s, %s, %s, %s or %s)", c.KMS, BackendLocal, BackendTPM, BackendVaultTransit, BackendVaultKV, BackendKMIP)
	}
	if err := c.TPM.validate(bad); err != nil {
		return err
	}
	switch c.Recovery.Mode {
	case RecoveryEscrow, RecoveryPrint, RecoveryNone:
	default:
		return bad("recovery.mode", "unknown mode %q (want escrow, print or none)", c.Recovery.Mode)
	}
	if err := c.validateKMIP(bad); err != nil {
		return err
	}
	if err := c.validatePolicies(); err != nil {
		return err
	}
	v := c.Vault
	usesVault := c.UsesVault()
	// VAULT_ADDR supplies the address when the file does not (the vault
	// package applies every VAULT_* variable on top of the file).
	if usesVault && v.Address == "" && len(v.Addresses) == 0 && os.Getenv("VAULT_ADDR") == "" {
		field := "kms"
		if c.KMS == BackendLocal || c.KMS == BackendKMIP {
			field = "recovery.mode"
			if c.policyNames(policy.FactorVault) {
				field = "policy"
			}
		}
		return bad(field, "needs vault.address or vault.addresses (or VAULT_ADDR)")
	}
	seen := map[string]bool{}
	for i, a := range append([]string{v.Address}, v.Addresses...) {
		if a == "" && i == 0 {
			continue
		}
		u, err := url.Parse(a)
		field := fmt.Sprintf("vault.addresses[%d]", i-1)
		if i == 0 {
			field = "vault.address"
		}
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return bad(field, "%q is not an http(s) URL such as https://vault1.example:8200", a)
		}
		if seen[strings.TrimSuffix(a, "/")] {
			return bad(field, "%q is listed twice", a)
		}
		seen[strings.TrimSuffix(a, "/")] = true
	}
	if v.MaxConcurrency < 0 {
		return bad("vault.max_concurrency", "must be positive (leave it out for the default, 4)")
	}
	switch v.Auth.Method {
	case "token":
	case "approle":
		if v.Auth.RoleID == "" && v.Auth.RoleIDFile == "" {
			return bad("vault.auth", "approle needs role_id or role_id_file")
		}
		if v.Auth.SecretIDFile == "" {
			return bad("vault.auth", "approle needs secret_id_file")
		}
	default:
		return bad("vault.auth.method", "unknown method %q (want token or approle)", v.Auth.Method)
	}
	if v.KV.Version != 1 && v.KV.Version != 2 {
		return bad("vault.kv.version", "must be 1 or 2")
	}
	if v.Timeout < 0 {
		return bad("vault.timeout", "must be positive")
	}
	if v.ElectionWait < 0 {
		return bad("vault.election_wait", "must be positive")
	}
	if v.Deadline < v.Timeout {
		return bad("vault.deadline", "%s is shorter than vault.timeout %s", v.Deadline, v.Timeout)
	}
	d := c.Daemon
	for _, f := range []struct {
		field string
		dur   time.Duration
	}{{"daemon.ready_timeout", d.ReadyTimeout}, {"daemon.retry_min", d.RetryMin}, {"daemon.retry_max", d.RetryMax}, {"daemon.rescan", d.Rescan}, {"daemon.rewrap", d.Rewrap}, {"daemon.start_jitter", d.StartJitter}} {
		if f.dur < 0 {
			return bad(f.field, "must be a positive duration such as 30s (leave it out for the default)")
		}
	}
	if d.RetryMax < d.RetryMin {
		return bad("daemon.retry_max", "%s is shorter than daemon.retry_min %s", d.RetryMax, d.RetryMin)
	}
	if err := checkListen(d.Metrics); err != nil {
		return bad("daemon.metrics", "%v", err)
	}
	if !strings.HasPrefix(c.StateDir, "/") {
		return bad("state_dir", "must be an absolute path")
	}
	names := map[string]int{}
	for i, vol := range c.Volumes {
		at := "volumes[" + strconv.Itoa(i) + "]"
		if err := CheckName(vol.Name); err != nil {
			return bad(at+".name", "%v", err)
		}
		if j, dup := names[vol.Name]; dup {
			return bad(at+".name", "%q is also the name of volumes[%d]", vol.Name, j)
		}
		names[vol.Name] = i
		if vol.Device == "" && vol.UUID == "" {
			return bad(at, "needs device or uuid")
		}
		if vol.Device != "" && !strings.HasPrefix(vol.Device, "/") {
			return bad(at+".device", "must be an absolute path")
		}
		if vol.Format && vol.Device == "" {
			return bad(at+".format", "needs device: a blank disk has no uuid yet")
		}
	}
	return nil
}

// validateKMIP checks the kmip section when kms is kmip.
func (c *Config) validateKMIP(bad func(field, format string, args ...any) error) error {
	k := c.KMIP
	if !c.UsesKMIP() {
		return nil
	}
	if k.Address == "" {
		return bad("kms", "kmip needs kmip.address (host:port of the key manager)")
	}
	for _, f := range []struct{ field, path string }{{"kmip.ca_file", k.CAFile}, {"kmip.cert_file", k.CertFile}, {"kmip.key_file", k.KeyFile}} {
		if f.path == "" {
			return bad("kms", "kmip needs %s (mutual TLS: the CA of the server, the node's certificate and key)", f.field)
		}
		if !strings.HasPrefix(f.path, "/") {
			return bad(f.field, "must be an absolute path")
		}
	}
	if strings.ContainsFunc(k.Key, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return bad("kmip.key", "control characters are not allowed")
	}
	if k.DestroyOnErase && !strings.Contains(k.Key, "{hostname}") {
		return bad("kmip.destroy_on_erase", "needs a per-node key (\"{hostname}\" in kmip.key): the key %q may serve other nodes' volumes", k.Key)
	}
	if k.Timeout < 0 {
		return bad("kmip.timeout", "must be positive")
	}
	if k.Deadline < k.Timeout {
		return bad("kmip.deadline", "%s is shorter than kmip.timeout %s", k.Deadline, k.Timeout)
	}
	return nil
}

// checkListen validates a metrics address: off, unix:/ABSOLUTE/PATH or
// HOST:PORT on a loopback address (the metrics carry volume names and
// UUIDs, which are not for the network).
func checkListen(addr string) error {
	switch {
	case addr == "off":
		return nil
	case strings.HasPrefix(addr, "unix:"):
		if !strings.HasPrefix(addr[5:], "/") {
			return fmt.Errorf("%q: the socket path must be absolute", addr)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want off, unix:/PATH or 127.0.0.1:PORT", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: bad port", addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%q: metrics listen on loopback only (127.0.0.1, ::1 or localhost)", addr)
	}
	return nil
}

// CheckName validates a mapping name the way device-mapper and
// /dev/mapper accept it.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty volume name")
	case len(name) > 127:
		return fmt.Errorf("volume name longer than 127 bytes")
	case name == "." || name == ".." || name == "control":
		return fmt.Errorf("volume name %q is reserved", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.+#@", r)) {
			return fmt.Errorf("volume name %q: character %q not allowed (letters, digits and -_.+#@)", name, r)
		}
	}
	return nil
}

// lineOf finds the line of a dotted field path such as "volumes[1].name"
// in the parsed document, or 0.
func lineOf(root *yaml.Node, field string) int {
	if root == nil || len(root.Content) == 0 {
		return 0
	}
	n := root.Content[0]
	line := 0
	for _, part := range strings.Split(field, ".") {
		key, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 {
			key = part[:i]
			idx, _ = strconv.Atoi(strings.TrimSuffix(part[i+1:], "]"))
		}
		next := (*yaml.Node)(nil)
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					line = n.Content[i].Line
					next = n.Content[i+1]
				}
			}
		}
		if next == nil {
			return line
		}
		n = next
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			line = n.Line
		}
	}
	return line
}
