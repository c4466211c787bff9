package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/atrest/atrest/pkg/volume"
)

// policyRows are status --long's lines of a policy volume: the policy and
// whether the factors that answer now satisfy it, then each factor: its
// KEK, whether it answers (or why not), whether it alone opens the volume.
func policyRows(p *volume.PolicyStatus, row func(k, v string)) {
	sat := "satisfied by the factors that answer now"
	if !p.Satisfied {
		sat = "NOT satisfied by the factors that answer now: the volume would not open (its recovery key would)"
	}
	row("policy", p.Expr+": "+sat)
	for _, f := range p.Factors {
		v := kmsLine(f.Backend, f.Key, f.KeyVersion)
		switch {
		case f.Error != "":
			v += ": broken: " + f.Error
		case f.Alone:
			v += ": answers, opens the volume alone"
		default:
			v += ": answers"
		}
		if f.Stale {
			v += fmt.Sprintf(" (stale: version %d exists)", f.LatestVersion)
		}
		row("factor "+f.Factor, v)
	}
}

// lastUnlockRow says which factors last unlocked the volume on this node.
func lastUnlockRow(l *volume.LastUnlock, row func(k, v string)) {
	if l == nil {
		row("last unlock", "not recorded on this node")
		return
	}
	row("last unlock", "by "+strings.Join(l.By, " + ")+" at "+l.At.UTC().Format(time.RFC3339))
}
