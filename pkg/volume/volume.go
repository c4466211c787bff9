// Package volume holds atrest's use cases: format, open, close, status,
// rekey, rewrap, recovery, header backup/restore/check, erase and adopt.
// The CLI (internal/cli) and the daemon (pkg/daemon) both call them, so a
// behaviour exists in exactly one place.
//
// A Manager binds the use cases to a configuration and its KMS backends.
// Every use case that changes a header holds the volume's lock (lock.go)
// for its whole run, so two atrest processes never interleave, and takes a
// header backup into the state directory before and after the change.
// Errors wrap the sentinels of this package and of pkg/luks2, pkg/kms,
// pkg/blockdev and pkg/dmcrypt; internal/cli maps them to exit codes.
package volume

import (
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms/backends"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/token"
)

// Manager runs the use cases for one configuration.
type Manager struct {
	cfg    *config.Config
	kms    *backends.Set
	log    *slog.Logger
	now    func() time.Time
	runDir string
	// observe, when set, is told the duration and outcome of every batched
	// KMS call (op "unwrap" or "rewrap").
	observe func(op string, took time.Duration, err error)
	// backupDirSync coalesces the directory syncs of header backups
	// saved at the same time (a batch of rewraps).
	backupDirSync groupSync
	// cfgDevs finds configured volumes by UUID and device (configFor).
	cfgDevs configIndex
}

// Option tunes a Manager.
type Option func(*Manager)

// WithLogger sends audit and progress records to l (the default discards
// them). Records never carry key material.
func WithLogger(l *slog.Logger) Option { return func(m *Manager) { m.log = l } }

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) Option { return func(m *Manager) { m.now = now } }

// WithRunDir moves the lock directory from /run/atrest, for tests.
func WithRunDir(dir string) Option { return func(m *Manager) { m.runDir = dir } }

// WithKMSObserver has f told how long each batched KMS call took and its
// first error (nil when every item succeeded): atrestd's latency metric.
func WithKMSObserver(f func(op string, took time.Duration, err error)) Option {
	return func(m *Manager) { m.observe = f }
}

// New returns a Manager for cfg and its backends.
func New(cfg *config.Config, set *backends.Set, opts ...Option) *Manager {
	m := &Manager{
		cfg:    cfg,
		kms:    set,
		log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		now:    time.Now,
		runDir: "/run/atrest",
	}
	for _, o := range opts {
		o(m)
	}
	return m
}

// Config returns the configuration the Manager runs with.
func (m *Manager) Config() *config.Config { return m.cfg }

// KMS returns the configured backends.
func (m *Manager) KMS() *backends.Set { return m.kms }

// observed runs call, the batched KMS call op, and reports it to the
// observer, if any.
func observed[T any](m *Manager, op string, call func() []T, errOf func(T) error) []T {
	start := time.Now()
	out := call()
	if m.observe != nil {
		var first error
		for _, r := range out {
			if err := errOf(r); err != nil {
				first = err
				break
			}
		}
		m.observe(op, time.Since(start), first)
	}
	return out
}

func (m *Manager) backupDir() string  { return filepath.Join(m.cfg.StateDir, "backups") }
func (m *Manager) journalDir() string { return filepath.Join(m.cfg.StateDir, "journal") }

// Volume is a LUKS2 volume as atrest sees it: its device, its header and
// the atrest tokens in that header.
type Volume struct {
	// Device is the path of the backing block device or image file.
	Device string
	// Header is the header as read.
	Header *luks2.Header
	// Name is the mapping name: the platform token's, else the config's.
	Name string
	// Platform is the platform token and TokenID its number; nil for a
	// LUKS2 volume atrest does not manage.
	Platform *token.Token
	TokenID  int
	// Others are further atrest tokens by token number: there is more than
	// one only while a rekey is under way or was interrupted.
	Others map[int]*token.Token
	// Unreadable lists the atrest tokens this build cannot parse (corrupt,
	// or written by a newer atrest). They are skipped, as cryptsetup skips
	// tokens it cannot parse, so that recovery, erase and header backup
	// work on any header cryptsetup reads; status reports each one.
	Unreadable []UnreadableToken
	// Recovery lists keyslots bound to systemd-recovery tokens.
	Recovery []int
	// Config is the configuration entry for this volume, if any.
	Config *config.Volume
	// id is what Device was when Header was read (device.go).
	id devID
}

// UnreadableToken is an atrest token that token.Parse refused.
type UnreadableToken struct {
	// ID is the token number, Keyslots the keyslots the header binds it to.
	ID       int
	Keyslots []int
	// Err wraps token.ErrInvalid and says what is wrong.
	Err error
}

// UUID is the volume's LUKS2 UUID.
func (v *Volume) UUID() string { return v.Header.UUID }

// Managed reports whether atrest manages the volume (it has a platform
// token).
func (v *Volume) Managed() bool { return v.Platform != nil }

// othersOf lists v's extra atrest tokens.
func othersOf(v *Volume) []*token.Token {
	out := make([]*token.Token, 0, len(v.Others))
	for _, t := range v.Others {
		out = append(out, t)
	}
	return out
}
