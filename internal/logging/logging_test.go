package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
)

// Where no journal runs, audit records are not dropped: they go to
// <state_dir>/audit.log, root-only, one JSON object a line, and stderr is
// told once, when the file is created.
func TestAuditWithoutJournalGoesToTheStateDir(t *testing.T) {
	if journal.Enabled() {
		t.Skip("a journal runs here: records go to it")
	}
	dir := filepath.Join(t.TempDir(), "state")
	var stderr bytes.Buffer
	for i, op := range []string{"format", "rekey"} {
		log := Audit(dir, &stderr)
		log.Info(op, "audit", true, "op", op, "volume", "1234", "result", "ok")
		if i == 0 && !strings.Contains(stderr.String(), "audit records go to "+filepath.Join(dir, AuditFile)) {
			t.Fatalf("stderr does not say where the audit records go: %q", stderr.String())
		}
	}
	if n := strings.Count(stderr.String(), "audit records go to"); n != 1 {
		t.Fatalf("the audit file was announced %d times: %q", n, stderr.String())
	}
	path := filepath.Join(dir, AuditFile)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("audit file mode %v, want 0600", st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 records, got %q", data)
	}
	for i, want := range []string{"format", "rekey"} {
		var rec map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &rec); err != nil {
			t.Fatalf("record %d is not JSON: %v", i, err)
		}
		if rec["op"] != want || rec["volume"] != "1234" || rec["audit"] != true {
			t.Fatalf("record %d: %v", i, rec)
		}
	}
}

// When the audit file cannot be opened, records go to stderr, with why.
func TestAuditFallsBackToStderr(t *testing.T) {
	if journal.Enabled() {
		t.Skip("a journal runs here: records go to it")
	}
	blocker := filepath.Join(t.TempDir(), "state")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	Audit(blocker, &stderr).LogAttrs(t.Context(), slog.LevelError, "erase", slog.String("op", "erase"), slog.String("result", "error"))
	if !strings.Contains(stderr.String(), "audit records go to standard error") || !strings.Contains(stderr.String(), "op=erase") {
		t.Fatalf("stderr: %q", stderr.String())
	}
}

// What `journalctl -u atrestd` and `systemctl status` show of a record is
// its MESSAGE: a failure names the volume and says why, not just that it
// failed (the fields stay for -o verbose).
func TestJournalMessageSaysWhichAndWhy(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		vars map[string]string
		want string
	}{
		{"volume not opened", map[string]string{"ATREST_NAME": "b05", "ATREST_REASON": "device", "ATREST_ERROR": "dmcrypt: the backing device is held exclusively: b05: device or resource busy"},
			"volume not opened (b05): dmcrypt: the backing device is held exclusively: b05: device or resource busy"},
		{"volume opened", map[string]string{"ATREST_NAME": "b05", "ATREST_MAPPER": "/dev/mapper/b05"}, "volume opened (b05)"},
		{"ready", nil, "ready"},
		{"open", map[string]string{"ATREST_AUDIT": "true", "ATREST_OP": "open", "ATREST_NAME": "b05", "ATREST_VOLUME": "u", "ATREST_DEVICE": "/dev/loop5", "ATREST_RESULT": "failed", "ATREST_ERROR": "kms down"},
			"open b05 (u) /dev/loop5: failed: kms down"},
	} {
		if got := journalMessage(tc.msg, tc.vars); got != tc.want {
			t.Errorf("journalMessage(%q) = %q, want %q", tc.msg, got, tc.want)
		}
	}
}
