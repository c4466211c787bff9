package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// cryptsetupLockDir is where libcryptsetup 2.6 keeps its lock files
// (DEFAULT_LUKS2_LOCK_PATH).
var cryptsetupLockDir = "/run/cryptsetup"

// ErrReencryptionLocked: another process (cryptsetup reencrypt, or another
// atrest) holds cryptsetup's re-encryption lock of the volume. It wraps
// ErrLocked.
var ErrReencryptionLocked = fmt.Errorf("%w: a re-encryption of this volume is running in another process (cryptsetup reencrypt or atrest)", ErrLocked)

// errNoLockDir: the lock directory cannot be created or written (not
// root, a read-only /run); the run goes on with a warning.
var errNoLockDir = errors.New("cryptsetup's lock directory is not writable")

// lockReencryption takes libcryptsetup's re-encryption lock of the LUKS2
// UUID uuid the way crypt_write_lock takes a named resource: a
// non-blocking exclusive flock of <lock dir>/LN_LUKS2-reencryption-<uuid>,
// created when missing, taken again when the file was unlinked by its
// previous holder between open and flock. While atrest holds it,
// `cryptsetup reencrypt` refuses the volume, and atrest refuses while
// cryptsetup runs; the runs cannot overlap. release unlinks the file as
// libcryptsetup does, then unlocks.
func lockReencryption(uuid string) (release func(), err error) {
	if err := os.Mkdir(cryptsetupLockDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%w: %w", errNoLockDir, err)
	}
	path := filepath.Join(cryptsetupLockDir, "LN_LUKS2-reencryption-"+uuid)
	for {
		fd, err := unix.Open(path, unix.O_CREAT|unix.O_NOFOLLOW|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EROFS) {
			return nil, fmt.Errorf("%w: %s: %w", errNoLockDir, path, err)
		} else if err != nil {
			return nil, fmt.Errorf("cryptsetup's re-encryption lock %s: %w", path, err)
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			unix.Close(fd)
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, fmt.Errorf("%w (%s is locked); wait for it to finish", ErrReencryptionLocked, path)
			}
			return nil, fmt.Errorf("cryptsetup's re-encryption lock %s: %w", path, err)
		}
		var held, now unix.Stat_t
		if unix.Fstat(fd, &held) == nil && unix.Stat(path, &now) == nil && held.Dev == now.Dev && held.Ino == now.Ino {
			return func() {
				_ = unix.Unlink(path)
				unix.Close(fd)
			}, nil
		}
		// The holder before us unlinked it on release: lock the new file.
		unix.Close(fd)
	}
}

// holdReencryption is lockReencryption for a command: where the lock
// directory cannot be written the run goes on, with a warning appended to
// warnings, and release does nothing.
func holdReencryption(uuid string, warnings *[]string) (release func(), err error) {
	release, err = lockReencryption(uuid)
	if errors.Is(err, errNoLockDir) {
		*warnings = append(*warnings, fmt.Sprintf("%v: a cryptsetup reencrypt of this volume is not kept out while this run lasts", err))
		return func() {}, nil
	}
	return release, err
}
