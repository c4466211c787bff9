// Package logging routes atrest's structured records: to the systemd
// journal with one journal field per attribute (ATREST_OP=rekey,
// ATREST_VOLUME=<uuid>, ...), so `journalctl ATREST_OP=rekey` finds them,
// or, where no journal runs, to a writer as text. Records never carry key
// material; pkg/secret.Key refuses to print and every error text in atrest
// is free of secrets.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
)

// Audit is the CLI's logger: the journal when it runs (the audit trail of
// administrators' commands), else nothing — a provisioning script's
// stderr is for errors.
func Audit(_ io.Writer) *slog.Logger {
	if journal.Enabled() {
		return slog.New(&journalHandler{level: slog.LevelInfo})
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
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
	msg := r.Message
	if op, ok := vars["ATREST_OP"]; ok && vars["ATREST_AUDIT"] == "true" {
		msg = fmt.Sprintf("%s %s (%s) %s: %s", op, vars["ATREST_NAME"], vars["ATREST_VOLUME"], vars["ATREST_DEVICE"], vars["ATREST_RESULT"])
		if e := vars["ATREST_ERROR"]; e != "" {
			msg += ": " + e
		}
	}
	return journal.Send(msg, priority(r.Level), vars)
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
