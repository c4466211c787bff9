package volume

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/atrest/atrest/pkg/luks2"
)

// Header backups live in <state_dir>/backups/<uuid>.luks2, in cryptsetup's
// luksHeaderBackup format, root-only. Every use case that changes a header
// makes sure a current backup exists before the change, and afterwards
// keeps the previous one as <uuid>.luks2.prev and writes a new current one:
// whatever happens, the state before the last change can be restored.

// BackupInfo says whether a volume's header backup exists and matches the
// header on the device.
type BackupInfo struct {
	Path    string `json:"path"`
	Present bool   `json:"present"`
	// Current: the backup's header is the device's (same sequence id).
	Current bool `json:"current"`
}

func (m *Manager) backupPath(uuid string) string {
	return filepath.Join(m.backupDir(), strings.ToLower(uuid)+".luks2")
}

// backupInfo compares the stored backup with h.
func (m *Manager) backupInfo(ctx context.Context, h *luks2.Header) BackupInfo {
	bi := BackupInfo{Path: m.backupPath(h.UUID)}
	f, err := luks2.OpenFile(bi.Path, false)
	if err != nil {
		return bi
	}
	defer f.Close()
	bi.Present = true
	if bh, err := luks2.Read(ctx, f); err == nil {
		bi.Current = bh.UUID == h.UUID && bh.SeqID == h.SeqID
	}
	return bi
}

// ensureBackup writes a backup of dev unless a current one exists: the
// "before" backup of a change.
func (m *Manager) ensureBackup(ctx context.Context, dev luks2.Reader, h *luks2.Header) error {
	if m.backupInfo(ctx, h).Current {
		return nil
	}
	return m.saveBackup(ctx, dev, h.UUID)
}

// saveBackup writes a fresh backup of dev, keeping the previous one as
// .prev. It is crash-safe: at every instant <uuid>.luks2 is a complete
// backup (the old or the new one). The new file is complete and synced
// under a temporary name; the current backup gets a second name (a hard
// link), which then replaces .prev in one rename; only then does the new
// file replace the current one, in one rename; the directory is synced
// last, so the new names survive a power loss.
func (m *Manager) saveBackup(ctx context.Context, dev luks2.Reader, uuid string) error {
	if err := os.MkdirAll(m.backupDir(), 0o700); err != nil {
		return fmt.Errorf("header backup: %w", err)
	}
	path := m.backupPath(uuid)
	tmp := path + ".new"
	if err := writeBackupFile(ctx, dev, tmp); err != nil {
		return fmt.Errorf("header backup of %s: %w", uuid, err)
	}
	err := keepPrevious(path)
	if err == nil {
		failpoint("backup-before-replace")
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("header backup of %s: %w", uuid, err)
	}
	// Remember the device, so that a header damaged beyond repair (whose
	// UUID cannot be read any more) still finds its backup.
	// (Unchanged, as after every change but the first, it is not
	// rewritten: that would cost a synced write and a rename.)
	if dev := devicePathOf(dev); dev != "" && !fileHolds(path+".device", dev+"\n") {
		if err := replaceFile(path+".device", []byte(dev+"\n")); err != nil {
			return fmt.Errorf("header backup of %s: %w", uuid, err)
		}
	}
	err = m.backupDirSync.do(func() error {
		d, err := os.Open(m.backupDir())
		if err == nil {
			err = d.Sync()
			d.Close()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("header backup of %s: sync %s: %w", uuid, m.backupDir(), err)
	}
	return nil
}

// groupSync runs a sync for many callers at once: each call returns after
// a sync that started after the call began (so it covers every rename the
// caller made before), but callers that arrive while one runs share the
// next. A batch of 256 rewraps then syncs the backup directory a few
// times, not 256 times, each sync costing a journal commit.
type groupSync struct {
	mu      sync.Mutex
	cond    *sync.Cond
	running bool
	started uint64 // syncs begun
	done    uint64 // the last sync finished
	err     error  // its outcome
}

func (g *groupSync) do(f func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cond == nil {
		g.cond = sync.NewCond(&g.mu)
	}
	// The next sync to begin; one running now may have begun before the
	// caller's renames.
	need := g.started + 1
	for g.done < need {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		mine := g.started
		g.mu.Unlock()
		err := f()
		g.mu.Lock()
		g.running, g.done, g.err = false, mine, err
		g.cond.Broadcast()
	}
	return g.err
}

// writeBackupFile writes a backup of dev to the new file tmp (created
// 0400, as root may still write it), synced. A file left there by a process that died is replaced. The file
// is sparse and holds the header copies and the keyslot areas they use
// (luks2.BackupSparse): reading, writing and syncing it costs a few
// hundred KiB, not the 16 MiB of the whole keyslots area, on every header
// change.
func writeBackupFile(ctx context.Context, dev luks2.Reader, tmp string) error {
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return err
	}
	n, err := luks2.BackupSparse(ctx, dev, f)
	if err == nil {
		err = f.Truncate(n)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// keepPrevious makes the backup at path also the .prev one, without a
// moment where path is missing: a hard link under a temporary name, then
// one rename over .prev.
func keepPrevious(path string) error {
	link := path + ".prev.new"
	_ = os.Remove(link)
	if err := os.Link(path, link); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if err := os.Rename(link, path+".prev"); err != nil {
		_ = os.Remove(link)
		return err
	}
	return nil
}

// fileHolds reports whether the file at path holds exactly data.
func fileHolds(path, data string) bool {
	b, err := os.ReadFile(path)
	return err == nil && string(b) == data
}

// replaceFile writes data to path through a synced temporary file and one
// rename, so that path holds the old or the new content, never a part.
func replaceFile(path string, data []byte) error {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// devicePathOf returns the path a device was opened with, when known.
func devicePathOf(dev luks2.Reader) string {
	switch d := dev.(type) {
	case interface{ Path() string }:
		return d.Path()
	case interface{ Name() string }:
		return d.Name()
	}
	return ""
}

// backupForDevice returns the stored backup last taken of device.
func (m *Manager) backupForDevice(device string) string {
	want, err := filepath.EvalSymlinks(device)
	if err != nil {
		return ""
	}
	marks, _ := filepath.Glob(filepath.Join(m.backupDir(), "*.luks2.device"))
	for _, mark := range marks {
		data, err := os.ReadFile(mark)
		if err != nil {
			continue
		}
		if got, err := filepath.EvalSymlinks(strings.TrimSpace(string(data))); err == nil && got == want {
			backup := strings.TrimSuffix(mark, ".device")
			if _, err := os.Stat(backup); err == nil {
				return backup
			}
		}
	}
	return ""
}

// removeBackups deletes a volume's backups (they hold its keyslots), for
// crypto-erase.
func (m *Manager) removeBackups(uuid string) error {
	var errs []error
	for _, p := range []string{m.backupPath(uuid), m.backupPath(uuid) + ".prev", m.backupPath(uuid) + ".device"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
