package volume

import (
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

func (m *Manager) unlockPath(uuid string) string {
	return filepath.Join(m.cfg.StateDir, "unlocked", uuid+".json")
}

// noteUnlocked records the factors that unlocked volume uuid, for status.
// It is a hint, not state a change depends on: a failure is logged only.
func (m *Manager) noteUnlocked(uuid string, by []string) {
	data, err := json.Marshal(LastUnlock{By: by, At: m.now().UTC()})
	if err == nil {
		err = os.MkdirAll(filepath.Dir(m.unlockPath(uuid)), 0o700)
	}
	if err == nil {
		tmp := m.unlockPath(uuid) + ".new"
		if err = os.WriteFile(tmp, data, 0o600); err == nil {
			err = os.Rename(tmp, m.unlockPath(uuid))
		}
	}
	if err != nil {
		m.log.Warn("could not record which factors unlocked the volume", "volume", uuid, "error", err.Error())
	}
}

// lastUnlock reads what noteUnlocked recorded for uuid, or nil.
func (m *Manager) lastUnlock(uuid string) *LastUnlock {
	data, err := os.ReadFile(m.unlockPath(uuid))
	if err != nil {
		return nil
	}
	var l LastUnlock
	if json.Unmarshal(data, &l) != nil || len(l.By) == 0 {
		return nil
	}
	return &l
}
