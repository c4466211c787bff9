// Package local is atrest's embedded KMS: a key-encryption key in a
// root-only file on the node, used with AES-256-GCM and the volume UUID as
// additional data. It implements the same kms.KEK interface as Vault, plus
// kms.Rotator and kms.Retirer.
//
// What it protects: a disk that leaves the machine (sold, returned, stolen
// on its own) is unreadable, because the KEK never leaves the node's root
// file system. What it does not: anyone who is root on the running node, or
// who holds the node's root file system together with its data disks, can
// unwrap every volume. See docs/kms.md.
package local

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/atrest/atrest/pkg/kms"
	"golang.org/x/sys/unix"
)

// Backend is the name tokens record for this backend.
const Backend = "local"

// DefaultPath is where the KEK file lives unless configured otherwise.
const DefaultPath = "/var/lib/atrest/kek"

// Keystore is a KEK file opened for use. It rereads the file when another
// process (the CLI rotating or retiring versions while atrestd runs) has
// replaced it. Safe for concurrent use.
type Keystore struct {
	path string

	mu   sync.Mutex
	f    *kekFile
	stat fileID
}

var (
	_ kms.KEK     = (*Keystore)(nil)
	_ kms.Rotator = (*Keystore)(nil)
	_ kms.Retirer = (*Keystore)(nil)
)

// fileID tells whether the file at a path was replaced or changed,
// including its permissions (ctime moves on chmod and chown).
type fileID struct {
	dev, ino     uint64
	mtime, ctime int64
	size         int64
	mode         uint32
}

func statID(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, fmt.Errorf("%s: no stat data", path)
	}
	return fileID{
		dev: st.Dev, ino: st.Ino, mtime: fi.ModTime().UnixNano(),
		ctime: st.Ctim.Nano(), size: fi.Size(), mode: st.Mode,
	}, nil
}

// Open opens the keystore at path, creating it with a fresh 256-bit KEK
// (version 1) on first use. It fails with kms.ErrConfig when the file is
// readable or writable by anyone but its owner, or is not a KEK file.
func Open(path string) (*Keystore, error) {
	if path == "" {
		path = DefaultPath
	}
	ks := &Keystore{path: path}
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		f, err := newKEKFile()
		if err != nil {
			return nil, err
		}
		err = f.create(path)
		f.wipe()
		if err != nil && !errors.Is(err, errExists) {
			return nil, fmt.Errorf("%w: create %s: %w", kms.ErrConfig, path, err)
		}
	}
	if err := ks.reload(); err != nil {
		return nil, err
	}
	return ks, nil
}

// reload reads the file again if it changed since the last read. The
// caller holds ks.mu, or is Open.
func (ks *Keystore) reload() error {
	id, err := statID(ks.path)
	if err != nil {
		return fmt.Errorf("%w: %w", kms.ErrConfig, err)
	}
	if ks.f != nil && id == ks.stat {
		return nil
	}
	f, err := readKEKFile(ks.path)
	if err != nil {
		if !errors.Is(err, kms.ErrConfig) {
			err = fmt.Errorf("%w: %w", kms.ErrConfig, err)
		}
		return err
	}
	if ks.f != nil {
		ks.f.wipe()
	}
	ks.f, ks.stat = f, id
	return nil
}

// current returns the up-to-date key file; the caller holds ks.mu.
func (ks *Keystore) current() (*kekFile, error) {
	if err := ks.reload(); err != nil {
		return nil, err
	}
	return ks.f, nil
}

// Close wipes the keys held in memory. The Keystore is unusable after.
func (ks *Keystore) Close() error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.f != nil {
		ks.f.wipe()
	}
	ks.f = nil
	ks.stat = fileID{}
	return nil
}

// Path is the KEK file's path.
func (ks *Keystore) Path() string { return ks.path }

// Backend returns "local".
func (ks *Keystore) Backend() string { return Backend }

// Key returns the keystore's id in hex: a node whose KEK file was replaced
// by a different one reports tokens of the old one as kms.ErrKeyNotFound.
func (ks *Keystore) Key() string {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.f == nil {
		return ""
	}
	return hex.EncodeToString(ks.f.id[:])
}

// Describe reports the newest and the oldest key version in the file.
func (ks *Keystore) Describe(context.Context) (kms.KeyInfo, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	f, err := ks.current()
	if err != nil {
		return kms.KeyInfo{}, err
	}
	return describe(f), nil
}

func describe(f *kekFile) kms.KeyInfo {
	return kms.KeyInfo{
		Backend:              Backend,
		Key:                  hex.EncodeToString(f.id[:]),
		LatestVersion:        f.latest().n,
		MinDecryptionVersion: f.versions[0].n,
	}
}

// lockFile serialises writers of the KEK file across processes.
func (ks *Keystore) lockFile() (unlock func(), err error) {
	fd, err := unix.Open(ks.path+".lock", unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return func() { unix.Close(fd) }, nil
}
