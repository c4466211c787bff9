// Package logging routes atrest's structured records: to the systemd
// journal with one journal field per attribute (ATREST_OP=rekey,
// ATREST_VOLUME=<uuid>, ...), so `journalctl ATREST_OP=rekey` finds them,
// or, where no journal runs, to the CLI's audit file (<state_dir>/audit.log,
// JSON lines) or atrestd's standard error. Records never carry key
// material; pkg/secret.Key refuses to print and every error text in atrest
// is free of secrets.
package logging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/coreos/go-systemd/v22/journal"
)

// AuditFile is the name of the CLI's audit file in the state directory,
// used where no journal runs.
const AuditFile = "audit.log"

// Audit is the CLI's logger for the audit trail of administrators'
// commands: the journal when it runs, else JSON lines appended to
// <stateDir>/audit.log (root-only), else, when that file cannot be opened,
// text on stderr. A provisioning script's stderr is for errors, so the
// file is preferred; stderr is told once, when the file is created, where
// the records go, and on every fallback to stderr why. The file is opened
// only when the first record is written.
func Audit(stateDir string, stderr io.Writer) *slog.Logger {
	if journal.Enabled() {
		return slog.New(&journalHandler{level: slog.LevelInfo})
	}
	return slog.New(&fileHandler{path: filepath.Join(stateDir, AuditFile), stderr: stderr})
}

// fileHandler appends records to the audit file, opening it on first use.
type fileHandler struct {
	path   string
	stderr io.Writer
	attrs  []slog.Attr
	groups []string

	once sync.Once
	h    slog.Handler
}

func (h *fileHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *fileHandler) Handle(ctx context.Context, r slog.Record) error {
	h.once.Do(h.open)
	return h.h.Handle(ctx, r)
}

func (h *fileHandler) open() {
	var inner slog.Handler
	f, created, err := openAuditFile(h.path)
	switch {
	case err != nil:
		fmt.Fprintf(h.stderr, "atrest: warning: no journal, and the audit file cannot be opened (%v): audit records go to standard error\n", err)
		inner = slog.NewTextHandler(h.stderr, nil)
	default:
		if created {
			fmt.Fprintf(h.stderr, "atrest: note: journald is not running; audit records go to %s\n", h.path)
		}
		// Each record is one write(2) to an O_APPEND file: concurrent
		// atrest processes do not interleave lines.
		inner = slog.NewJSONHandler(f, nil)
	}
	if len(h.attrs) > 0 {
		inner = inner.WithAttrs(h.attrs)
	}
	for _, g := range h.groups {
		inner = inner.WithGroup(g)
	}
	h.h = inner
}

// openAuditFile opens path for appending, creating it (and its directory)
// root-only; created says it did not exist before.
func openAuditFile(path string) (f *os.File, created bool, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, err
	}
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL|syscall.O_CLOEXEC, 0o600)
	if err == nil {
		return f, true, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return nil, false, err
	}
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
	return f, false, err
}

func (h *fileHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &fileHandler{path: h.path, stderr: h.stderr, groups: h.groups, attrs: append(append([]slog.Attr{}, h.attrs...), attrs...)}
}

func (h *fileHandler) WithGroup(name string) slog.Handler {
	return &fileHandler{path: h.path, stderr: h.stderr, attrs: h.attrs, groups: append(append([]string{}, h.groups...), name)}
}

// Daemon is atrestd's logger: the journal when it runs, else text lines
// on w (a terminal, or a test).
func Daemon(w io.Writer, level slog.Level) *slog.Logger {
	if journal.Enabled() {
		return slog.New(&journalHandler{level: level})
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// journalHandler sends records with journald's native protocol.
type journalHandler struct {
	level  slog.Level
	attrs  []slog.Attr
	prefix string
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *journalHandler) Handle(_ context.Context, r slog.Record) error {
	vars := map[string]string{"SYSLOG_IDENTIFIER": "atrest"}
	add := func(a slog.Attr) {
		key := "ATREST_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(h.prefix+a.Key))
		vars[key] = a.Value.String()
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(func(a slog.Attr) bool { add(a); return true })
	return journal.Send(journalMessage(r.Message, vars), priority(r.Level), vars)
}

// journalMessage is a record's MESSAGE: what `journalctl` and `systemctl
// status` show, so it names the volume and carries the error (the fields
// are there too, for `-o verbose` and filters).
func journalMessage(msg string, vars map[string]string) string {
	if op, ok := vars["ATREST_OP"]; ok && vars["ATREST_AUDIT"] == "true" {
		msg = fmt.Sprintf("%s %s (%s) %s: %s", op, vars["ATREST_NAME"], vars["ATREST_VOLUME"], vars["ATREST_DEVICE"], vars["ATREST_RESULT"])
	} else if n := vars["ATREST_NAME"]; n != "" {
		msg += " (" + n + ")"
	}
	if e := vars["ATREST_ERROR"]; e != "" {
		msg += ": " + e
	}
	return msg
}

func (h *journalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr{}, h.attrs...), attrs...)
	return &c
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.prefix = h.prefix + name + "_"
	return &c
}

func priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	default:
		return journal.PriDebug
	}
}
