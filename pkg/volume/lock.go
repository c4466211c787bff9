package volume

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// lockWait bounds how long a use case waits for another atrest process to
// finish with the same volume before it gives up with ErrLocked.
const lockWait = 30 * time.Second

// lock takes the volume's exclusive lock, /run/atrest/<uuid>.lock, held
// for the whole use case (which may write the header several times). Each
// single header write also takes cryptsetup's own device lock inside
// pkg/luks2, so cryptsetup never interleaves with atrest either. The lock
// file records the holder's PID for the error message of whoever waits.
func (m *Manager) lock(ctx context.Context, uuid string) (release func(), err error) {
	return m.lockFile(ctx, strings.ToLower(uuid)+".lock", "volume "+uuid)
}

// lockName takes the exclusive lock of a volume name,
// /run/atrest/name-<name>.lock: format and adopt hold it from the check
// that no volume has the name until their header commit, so two of them
// can never both give one name to two volumes. Names are validated
// (config.CheckName), so they are safe in a file name.
func (m *Manager) lockName(ctx context.Context, name string) (release func(), err error) {
	return m.lockFile(ctx, "name-"+name+".lock", "name "+name)
}

// lockFile takes the flock of file in the run directory, waiting up to
// lockWait; what names it in the error.
func (m *Manager) lockFile(ctx context.Context, file, what string) (release func(), err error) {
	if err := os.MkdirAll(m.runDir, 0o700); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	path := filepath.Join(m.runDir, file)
	// The file usually exists (it is never removed): opened without
	// O_CREAT, the lookup takes the directory's lock shared, not
	// exclusive, so a batch's changes do not queue (and spin) on it.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, lockWait)
	defer cancel()
	start := time.Now()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			holder, _ := os.ReadFile(path)
			f.Close()
			pid := strings.TrimSpace(string(holder))
			if pid == "" {
				pid = "unknown"
			}
			return nil, fmt.Errorf("%w: %s (holder pid %s, waited %s)", ErrLocked, what, pid, time.Since(start).Round(100*time.Millisecond))
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The holder's pid, for the error of a process that waits in vain.
	// Written over the last holder's and cut to length, not emptied
	// first: truncating to zero and writing again frees and allocates a
	// block of the file system each time, on every change of a batch.
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	_, _ = f.WriteAt(pid, 0)
	_ = f.Truncate(int64(len(pid)))
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}
