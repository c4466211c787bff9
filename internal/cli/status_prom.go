package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/atrest/atrest/internal/health"
	"github.com/atrest/atrest/pkg/volume"
)

// writeStatusProm writes sts in the Prometheus text format, for the node
// exporter's textfile collector (docs/operations.md, "Fleet inventory").
// The per-volume gauges are atrestd's (internal/health), named
// atrest_status_* so that a node running both does not report one series
// twice.
func writeStatusProm(w io.Writer, sts []volume.Status) {
	type gauge struct {
		name, help string
		value      func(volume.Status, health.Volume) (labels string, v bool)
	}
	plain := func(f func(volume.Status, health.Volume) bool) func(volume.Status, health.Volume) (string, bool) {
		return func(s volume.Status, h health.Volume) (string, bool) { return "", f(s, h) }
	}
	gauges := []gauge{
		{"atrest_status_volume_healthy", "1 when atrest status reports no problem for the volume.",
			plain(func(s volume.Status, _ health.Volume) bool { return s.Healthy })},
		{"atrest_status_volume_open", "1 when the volume is open (mapped).",
			plain(func(s volume.Status, _ health.Volume) bool { return s.State == volume.StateOpen })},
		{"atrest_status_volume_stale_key", "1 when the token is wrapped under an older KEK version than the KMS's newest.",
			plain(func(s volume.Status, _ health.Volume) bool { return s.KMS != nil && s.KMS.Stale })},
		{"atrest_status_volume_header_backup", "1, with state missing, stale or current: the volume's header backup.",
			func(_ volume.Status, h health.Volume) (string, bool) { return `,state="` + h.Backup + `"`, true }},
		{"atrest_status_volume_recovery_missing", "1 when the token records a recovery key but no keyslot holds one.",
			plain(func(_ volume.Status, h health.Volume) bool { return h.RecoveryMissing })},
		{"atrest_status_volume_tpm_reseal_needed", "1 when a TPM keyslot's PCRs no longer match.",
			plain(func(_ volume.Status, h health.Volume) bool { return h.ResealNeeded })},
	}
	for _, g := range gauges {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n", g.name, g.help, g.name)
		for _, s := range sts {
			if s.UUID == "" {
				continue // configured, not found: atrest_status_volume_missing
			}
			extra, v := g.value(s, health.Of(s))
			fmt.Fprintf(w, "%s{name=%s,volume=%s%s} %s\n", g.name, quote(s.Name), quote(s.UUID), extra, b01(v))
		}
	}
	fmt.Fprintf(w, "# HELP atrest_status_volume_missing 1 for a configured volume no device carries.\n# TYPE atrest_status_volume_missing gauge\n")
	for _, s := range sts {
		if s.State == volume.StateMissing {
			fmt.Fprintf(w, "atrest_status_volume_missing{name=%s} 1\n", quote(s.Name))
		}
	}
}

// quote is a label value in the text format: backslash, quote and
// newline escaped.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

func b01(b bool) string { return strconv.Itoa(map[bool]int{false: 0, true: 1}[b]) }
