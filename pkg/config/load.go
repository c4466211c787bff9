package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/atrest/atrest/pkg/policy"
)

// Error is a problem with the configuration file. Field is the dotted path
// of the offending key ("vault.transit.key", "volumes[1].name") and Line its
// line in the file (0 when unknown or not from a file).
type Error struct {
	Path  string
	Line  int
	Field string
	Msg   string
	// Err is a sentinel the error wraps, such as ErrInsecure.
	Err error
}

// Unwrap returns the wrapped sentinel, if any.
func (e *Error) Unwrap() error { return e.Err }

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config")
	if e.Path != "" {
		b.WriteString(" " + e.Path)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
	}
	if e.Field != "" {
		b.WriteString(": " + e.Field)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// ErrUnreadable is wrapped by errors reading the file: it is missing (at
// a path other than the default), a directory, or not readable.
var ErrUnreadable = errors.New("cannot read the configuration file")

// ErrInsecure is wrapped by errors about the file's ownership or mode.
var ErrInsecure = errors.New("insecure configuration file")

// Load reads, defaults and validates the file at path. A missing file at
// the default path yields the defaults (the local keystore), so a fresh
// machine works without one; a missing file anywhere else is an error.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && path == DefaultPath {
		c := &Config{}
		c.applyDefaults()
		return c, c.validate(nil)
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w: %w", ErrUnreadable, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w: %w", ErrUnreadable, err)
	}
	c, err := Parse(data, path)
	if err != nil {
		return nil, err
	}
	if err := checkMode(path, st, c.HasCredentials()); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse decodes and validates a configuration held in memory; path is used
// in error messages only.
func Parse(data []byte, path string) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(path, err)
	}
	c := &Config{Path: path}
	if len(bytes.TrimSpace(data)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		// A file of comments only (the packaged example) is an empty
		// document: the defaults.
		if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
			return nil, yamlError(path, err)
		}
	}
	c.Path = path
	c.applyDefaults()
	if err := c.validate(&root); err != nil {
		return nil, err
	}
	return c, nil
}

// yamlError turns the YAML library's "yaml: line N: msg" into an Error.
func yamlError(path string, err error) error {
	var pe *policy.Error
	if errors.As(err, &pe) {
		return &Error{Path: path, Line: pe.Line, Field: "policy", Msg: pe.Msg}
	}
	var te *yaml.TypeError
	msg := err.Error()
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 0
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
	}
	return &Error{Path: path, Line: line, Msg: msg}
}

// HasCredentials reports whether the file itself holds a credential, which
// makes a world-readable file unacceptable.
func (c *Config) HasCredentials() bool {
	return c.Vault.Auth.RoleID != ""
}

func checkMode(path string, st fs.FileInfo, creds bool) error {
	mode := st.Mode().Perm()
	if mode&0o022 != 0 {
		return &Error{Path: path, Err: ErrInsecure, Msg: fmt.Sprintf("%v: writable by group or others (mode %04o); run: chmod go-w %s", ErrInsecure, mode, path)}
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 && int(sys.Uid) != os.Geteuid() {
		return &Error{Path: path, Err: ErrInsecure, Msg: fmt.Sprintf("%v: owned by uid %d, not root", ErrInsecure, sys.Uid)}
	}
	if creds && mode&0o004 != 0 {
		return &Error{Path: path, Err: ErrInsecure, Msg: fmt.Sprintf("%v: holds vault.auth.role_id but is world-readable (mode %04o); run: chmod o-r %s", ErrInsecure, mode, path)}
	}
	return nil
}

func (c *Config) applyDefaults() {
	if c.KMS == "" {
		c.KMS, c.KMSDefaulted = BackendLocal, true
	}
	c.TPM.applyDefaults()
	if c.Local.Keystore == "" {
		c.Local.Keystore = "/var/lib/atrest/kek"
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/atrest"
	}
	v := &c.Vault
	if v.Transit.Mount == "" {
		v.Transit.Mount = "transit"
	}
	if v.Transit.Key == "" {
		v.Transit.Key = "atrest"
	}
	if v.KV.Mount == "" {
		v.KV.Mount = "secret"
	}
	if v.KV.Prefix == "" {
		v.KV.Prefix = "atrest"
	}
	if v.KV.Version == 0 {
		v.KV.Version = 2
	}
	if v.Escrow.Mount == "" {
		v.Escrow.Mount = v.KV.Mount
	}
	if v.Escrow.Prefix == "" {
		v.Escrow.Prefix = "atrest-escrow"
	}
	if v.Auth.Method == "" {
		v.Auth.Method = "token"
		if v.Auth.RoleID != "" || v.Auth.RoleIDFile != "" {
			v.Auth.Method = "approle"
		}
	}
	if v.Auth.Mount == "" {
		v.Auth.Mount = "approle"
	}
	if v.Timeout == 0 {
		v.Timeout = 10 * time.Second
	}
	if v.Deadline == 0 {
		v.Deadline = 60 * time.Second
	}
	k := &c.KMIP
	if k.Key == "" {
		k.Key = "atrest-{hostname}"
	}
	if k.Timeout == 0 {
		k.Timeout = 10 * time.Second
	}
	if k.Deadline == 0 {
		k.Deadline = 60 * time.Second
	}
	d := &c.Daemon
	if d.ReadyTimeout == 0 {
		d.ReadyTimeout = 60 * time.Second
	}
	if d.RetryMin == 0 {
		d.RetryMin = time.Second
	}
	if d.RetryMax == 0 {
		d.RetryMax = 30 * time.Second
	}
	if d.Rescan == 0 {
		d.Rescan = time.Minute
	}
	if d.Rewrap == 0 {
		d.Rewrap = 6 * time.Hour
	}
	if d.Metrics == "" {
		d.Metrics = "unix:/run/atrest/metrics.sock"
	}
	if c.Recovery.Mode == "" {
		// Escrow where a Vault exists to hold it; otherwise print once,
		// because a local keystore lost with its machine takes every
		// volume with it.
		c.Recovery.Mode = RecoveryPrint
		if c.KMS == BackendVaultTransit || c.KMS == BackendVaultKV {
			c.Recovery.Mode = RecoveryEscrow
		}
	}
}
