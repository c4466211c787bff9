package volume

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// journal records a multi-commit header change (rekey, reseal, recovery
// rotation) in <state_dir>/journal/<uuid>.json, so that the next run
// knows what was under way when a process died. The header itself stays
// the truth: a second platform token in it means a change was cut short
// even when the journal is lost, and the next rekey finishes or undoes it
// (rekey.go).
type journal struct {
	Op      string    `json:"op"`
	Started time.Time `json:"started"`
	// OldKeyslot and OldToken are what the change replaces.
	OldKeyslot int `json:"old_keyslot"`
	OldToken   int `json:"old_token"`
	// NewKeyslot and NewToken are set once the new key material is on
	// the device (-1 before).
	NewKeyslot int `json:"new_keyslot"`
	NewToken   int `json:"new_token"`
	// Recovery: the change also replaces the recovery keyslots listed in
	// OldRecovery, whose arrangement the platform token recorded as
	// OldRecord (token.Token.Recovery).
	Recovery     bool   `json:"recovery,omitempty"`
	RecoveryMode string `json:"recovery_mode,omitempty"`
	OldRecovery  []int  `json:"old_recovery,omitempty"`
	OldRecord    string `json:"old_record,omitempty"`
	// Verified: the new recovery key opened its keyslot (it cannot be
	// checked again by a later run, which does not have the key).
	Verified bool `json:"verified,omitempty"`
	// Shown: in mode print, the new recovery key was output. Until then
	// the old recovery keyslots stay, and an interrupted run removes the
	// new one instead: nobody has seen it.
	Shown bool `json:"shown,omitempty"`
}

func (m *Manager) journalPath(uuid string) string {
	return filepath.Join(m.journalDir(), strings.ToLower(uuid)+".json")
}

// readJournal returns the journal of uuid, or nil when there is none.
func (m *Manager) readJournal(uuid string) (*journal, error) {
	data, err := os.ReadFile(m.journalPath(uuid))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	j := &journal{}
	if err := json.Unmarshal(data, j); err != nil {
		return nil, fmt.Errorf("journal %s: %w", m.journalPath(uuid), err)
	}
	return j, nil
}

// writeJournal replaces the journal atomically and durably (the file and
// its directory entry are synced before it returns).
func (m *Manager) writeJournal(uuid string, j *journal) error {
	if err := os.MkdirAll(m.journalDir(), 0o700); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	path := m.journalPath(uuid)
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
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
	if err == nil {
		err = syncDir(m.journalDir())
	}
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// clearJournal removes the journal durably: a journal that came back
// after a crash would make the next run settle a change twice.
func (m *Manager) clearJournal(uuid string) error {
	err := os.Remove(m.journalPath(uuid))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = syncDir(m.journalDir())
	}
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// syncDir makes a rename or unlink in dir durable: without it, a power
// loss may bring back the directory entry as it was before.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
