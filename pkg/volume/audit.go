package volume

import (
	"context"
	"log/slog"
)

// audit records one use case's outcome: op, volume UUID, name, device and
// result, plus attrs. It is the journal's audit trail (atrestd's logger
// writes to the journal); it never carries key material, and error texts
// in this code base never include any.
func (m *Manager) audit(ctx context.Context, op, uuid, name, device string, err error, attrs ...slog.Attr) {
	base := []slog.Attr{
		slog.Bool("audit", true),
		slog.String("op", op),
		slog.String("volume", uuid),
		slog.String("name", name),
		slog.String("device", device),
	}
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelError
		base = append(base, slog.String("result", "error"), slog.String("error", err.Error()))
	} else {
		base = append(base, slog.String("result", "ok"))
	}
	m.log.LogAttrs(ctx, level, op, append(base, attrs...)...)
}
