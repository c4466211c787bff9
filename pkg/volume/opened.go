package volume

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"time"
)

// LastUnlock is what the factors last did for a volume on this node:
// which ones gave the secret that unlocked it, and when.
type LastUnlock struct {
	By []string  `json:"by"`
	At time.Time `json:"at"`
}

// unlockNotesPath is the one file that holds every volume's LastUnlock,
// by UUID.
func (m *Manager) unlockNotesPath() string {
	return filepath.Join(m.cfg.StateDir, "unlocked.json")
}

// legacyUnlockPath is where earlier versions kept one volume's note.
func (m *Manager) legacyUnlockPath(uuid string) string {
	return filepath.Join(m.cfg.StateDir, "unlocked", uuid+".json")
}

// noteUnlocked records, for status, the factors (by[i]) that unlocked each
// volume of vols that has no error: one read-modify-write of one file,
// under a lock, for the whole batch (a file per volume cost more CPU than
// its keyslot open). It is a hint, not state a change depends on: a
// failure is logged only.
func (m *Manager) noteUnlocked(ctx context.Context, vols []*Volume, factors [][]string, errs []error) {
	by := map[string][]string{}
	for i, v := range vols {
		if errs[i] == nil && len(factors[i]) > 0 {
			by[v.UUID()] = factors[i]
		}
	}
	if len(by) == 0 {
		return
	}
	err := func() error {
		release, err := m.lockFile(ctx, "unlocked.lock", "the unlock notes")
		if err != nil {
			return err
		}
		defer release()
		notes := m.unlockNotes()
		at := m.now().UTC()
		for uuid, f := range by {
			notes[uuid] = LastUnlock{By: f, At: at}
		}
		data, err := json.Marshal(notes)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(m.cfg.StateDir, 0o700); err != nil {
			return err
		}
		tmp := m.unlockNotesPath() + ".new"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return err
		}
		return os.Rename(tmp, m.unlockNotesPath())
	}()
	if err != nil {
		m.log.Warn("could not record which factors unlocked the volumes", "volumes", len(by), "error", err.Error())
	}
}

// unlockNotes reads every volume's note (an empty map when there is none).
func (m *Manager) unlockNotes() map[string]LastUnlock {
	notes := map[string]LastUnlock{}
	if data, err := os.ReadFile(m.unlockNotesPath()); err == nil {
		_ = json.Unmarshal(data, &notes)
	}
	return notes
}

// lastUnlock reads what noteUnlocked recorded for uuid, or nil.
func (m *Manager) lastUnlock(uuid string) *LastUnlock {
	if l, ok := m.unlockNotes()[uuid]; ok && len(l.By) > 0 {
		return &l
	}
	data, err := os.ReadFile(m.legacyUnlockPath(uuid))
	if err != nil {
		return nil
	}
	var l LastUnlock
	if json.Unmarshal(data, &l) != nil || len(l.By) == 0 {
		return nil
	}
	return &l
}
