package kmip

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/internal/keyfile"
)

// Config is how atrest reaches a KMIP server and which key it uses.
type Config struct {
	// Address is host:port of the key manager; the port defaults to 5696.
	Address string
	// ServerName is the name the server certificate must carry; default
	// the address's host.
	ServerName string
	// CAFile holds the CA certificates that sign the server certificate
	// (PEM). Required: a key manager is never trusted through the system
	// roots.
	CAFile string
	// CertFile and KeyFile are the client certificate and its private key
	// (PEM). The key file must be private to root (mode 0600 or 0400).
	CertFile, KeyFile string
	// Key is the Name attribute of the AES-256 key objects atrest uses.
	Key string
	// Create lets atrest create and activate the key (Create and Activate
	// in one message) when no object carries the name yet.
	Create bool
	// Timeout bounds one request (connect, TLS handshake, request and
	// response); Deadline bounds all retries of one operation.
	Timeout, Deadline time.Duration
	// Backoff paces retries of transient failures.
	Backoff Backoff
	// MaxBatch bounds the batch items of one message; larger batches are
	// split. Default 256.
	MaxBatch int
}

// Backoff paces retries: the n-th wait is drawn uniformly between half and
// all of min(Max, Initial·2ⁿ).
type Backoff struct {
	Initial, Max time.Duration
}

// Defaults.
const (
	DefaultPort     = "5696"
	DefaultTimeout  = 10 * time.Second
	DefaultDeadline = 60 * time.Second
	DefaultMaxBatch = 256
)

func (c *Config) defaults() error {
	if c.Address == "" {
		return fmt.Errorf("%w: kmip: no address", kms.ErrConfig)
	}
	host, _, err := net.SplitHostPort(c.Address)
	if err != nil {
		host = c.Address
		c.Address = net.JoinHostPort(host, DefaultPort)
	}
	if c.ServerName == "" {
		c.ServerName = host
	}
	if c.Key == "" {
		return fmt.Errorf("%w: kmip: no key name", kms.ErrConfig)
	}
	if c.CAFile == "" || c.CertFile == "" || c.KeyFile == "" {
		return fmt.Errorf("%w: kmip: ca_file, cert_file and key_file are all required (mutual TLS)", kms.ErrConfig)
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Deadline <= 0 {
		c.Deadline = DefaultDeadline
	}
	if c.Deadline < c.Timeout {
		c.Deadline = c.Timeout
	}
	if c.Backoff.Initial <= 0 {
		c.Backoff.Initial = 200 * time.Millisecond
	}
	if c.Backoff.Max <= 0 {
		c.Backoff.Max = 5 * time.Second
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	return nil
}

// maxKeyFile bounds the client key file (a PEM RSA-4096 key is about 3 KiB).
const maxKeyFile = 64 << 10

// tlsConfig reads the CA, certificate and key files. The key file is
// refused when group or others could read it, like every credential file
// of atrest.
func (c *Config) tlsConfig() (*tls.Config, error) {
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("%w: kmip ca_file: %w", kms.ErrConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%w: kmip ca_file %s holds no PEM certificate", kms.ErrConfig, c.CAFile)
	}
	certPEM, err := os.ReadFile(c.CertFile)
	if err != nil {
		return nil, fmt.Errorf("%w: kmip cert_file: %w", kms.ErrConfig, err)
	}
	keyPEM, err := keyfile.Read(c.KeyFile, maxKeyFile, false)
	if err != nil {
		return nil, fmt.Errorf("%w: kmip key_file: %w", kms.ErrConfig, err)
	}
	defer keyPEM.Wipe()
	pair, err := tls.X509KeyPair(certPEM, keyPEM.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%w: kmip cert_file and key_file: %w", kms.ErrConfig, err)
	}
	return &tls.Config{
		RootCAs:      pool,
		ServerName:   c.ServerName,
		Certificates: []tls.Certificate{pair},
		MinVersion:   tls.VersionTLS12,
	}, nil
}
