// Package keyfile reads and writes the small root-only files that hold
// atrest's KMS credentials and keys (Vault token and AppRole secret_id
// files, the local keystore's KEK file). It refuses a file that anyone but
// its owner could read or write, because such a file may already have
// leaked, and it replaces files atomically so a crash leaves the old or the
// new content, never a torn one.
package keyfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/atrest/atrest/pkg/secret"
	"golang.org/x/sys/unix"
)

// ErrInsecure is returned for a file whose owner or permissions would let
// someone other than its owner (root, for atrest) read or change it.
var ErrInsecure = errors.New("file is not private to its owner")

// Check verifies that fi describes a regular file owned by the current
// user with no permission bits for group or others.
func Check(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: %w: not a regular file", path, ErrInsecure)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s: %w: mode %04o, want 0600 or 0400 (chmod 600 %s)", path, ErrInsecure, perm, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s: %w: owned by uid %d, not by uid %d", path, ErrInsecure, st.Uid, os.Geteuid())
	}
	return nil
}

// Open opens path for reading without following a symbolic link in its
// last component, and checks the opened file itself (not the name, which
// could be swapped in between).
func Open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		err = Check(path, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Read returns the content of the private file path in locked memory. At
// most max bytes are accepted. Text files (tokens, secret_ids) lose one
// trailing newline with trimNewline; binary files must not, or a key whose
// last byte happens to be 0x0a would lose it.
func Read(path string, max int, trimNewline bool) (*secret.Key, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	k, err := secret.Read(f, max, trimNewline)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// WriteAtomic replaces path with data, mode 0600: it writes a temporary
// file beside it, syncs it, renames it over path and syncs the directory.
// The caller clears data if it is secret.
func WriteAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // no-op after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir makes a rename or create in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ErrExists is CreateExclusive's error when path exists already.
var ErrExists = errors.New("file appeared while creating it")

// CreateExclusive writes data as a new file at path, mode 0600, creating
// its directory (mode 0700) if needed, failing with ErrExists if a file
// appeared there meanwhile: two processes creating a key at once cannot
// both succeed, and readers never see a partial file. The caller clears
// data if it is secret.
func CreateExclusive(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Write a private temporary file, then link it into place: link fails
	// if path exists.
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".new-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(data)
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return werr
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return ErrExists
		}
		return err
	}
	return SyncDir(dir)
}
