package cli

import (
	"fmt"
	"strings"

	"github.com/atrest/atrest/pkg/volume"
	ucli "github.com/urfave/cli/v2"
)

func statusCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:      "status",
		Usage:     "show what is encrypted, open, with which key version, and what needs attention",
		ArgsUsage: "[NAME|DEVICE|UUID...]",
		Description: `Without arguments: every atrest volume on this machine and every
configured one. Exit code 0 means all are healthy, 3 that something needs
attention (the problems are listed, each with the command that fixes it).

The JSON form (-o json) is a stable, versioned schema (docs/cli.md).

EXAMPLES:
   atrest status
   atrest status data1 --long
   atrest -o json status | jq '.volumes[] | select(.healthy | not)'
   atrest status --prometheus > /var/lib/prometheus/node-exporter/atrest.prom.tmp

` + exitCodeHelp(),
		Flags: []ucli.Flag{
			&ucli.BoolFlag{Name: "long", Aliases: []string{"l"}, Usage: "every detail of each volume"},
			&ucli.BoolFlag{Name: "prometheus", Usage: "print gauges in the Prometheus text format, for the node exporter's textfile collector"},
		},
		Action: func(c *ucli.Context) error {
			if err := checkRefs(c.Args().Slice()...); err != nil {
				return err
			}
			m, err := e.manager()
			if err != nil {
				return err
			}
			sts, errs := m.StatusOf(c.Context, c.Args().Slice())
			if len(errs) > 0 && len(c.Args().Slice()) > 0 {
				return errs[0]
			}
			for _, err := range errs {
				e.warn("%v", err)
			}
			healthy := true
			for _, s := range sts {
				healthy = healthy && s.Healthy
			}
			if c.Bool("prometheus") {
				// The gauges carry the health: a collector's timer
				// should not fail because a volume needs attention.
				writeStatusProm(e.stdout, sts)
				return nil
			}
			if e.json {
				if sts == nil {
					sts = []volume.Status{}
				}
				e.printJSON(statusDoc{v1, healthy, sts})
			} else if c.Bool("long") {
				e.statusLong(sts)
			} else {
				e.statusTable(sts)
			}
			if !healthy {
				return exitCode(ExitAttention)
			}
			return nil
		},
	}
}

func (e *env) statusTable(sts []volume.Status) {
	if len(sts) == 0 {
		e.printf("no atrest volumes\n")
		return
	}
	w := e.table()
	fmt.Fprintln(w, "NAME\tDEVICE\tSTATE\tKMS\tKEY\tRECOVERY\tBACKUP\tHEALTH")
	for _, s := range sts {
		kms, key := "-", "-"
		if s.KMS != nil {
			kms = s.KMS.Backend
			key = fmt.Sprintf("%s v%d", s.KMS.Key, s.KMS.KeyVersion)
			if s.KMS.Stale {
				key += fmt.Sprintf(" (v%d exists)", s.KMS.LatestVersion)
			}
			if s.KMS.Backend == "vault-kv" || s.Policy != nil {
				key = s.KMS.Key
			}
		}
		rec := "none"
		if s.Recovery.Present {
			rec = "yes"
			if s.Recovery.Escrow != "" {
				rec = strings.SplitN(s.Recovery.Escrow, ":", 2)[0]
			}
		}
		backup := "none"
		if s.Backup.Present {
			backup = "stale"
			if s.Backup.Current {
				backup = "current"
			}
		}
		health := "ok"
		if !s.Healthy {
			health = fmt.Sprintf("%d problem(s)", len(s.Problems))
		}
		dev := s.Device
		if dev == "" {
			dev = "-"
		}
		name := s.Name
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, dev, s.State, kms, key, rec, backup, health)
	}
	w.Flush()
	for _, s := range sts {
		for _, p := range s.Problems {
			e.printf("%s: %s\n", statusRef(s), p)
		}
	}
}

func (e *env) statusLong(sts []volume.Status) {
	for i, s := range sts {
		if i > 0 {
			e.printf("\n")
		}
		e.printf("%s\n", statusRef(s))
		w := e.table()
		row := func(k, v string) { fmt.Fprintf(w, "  %s\t%s\n", k, v) }
		row("device", s.Device)
		row("uuid", s.UUID)
		row("state", s.State+" "+s.Mapper)
		row("cipher", fmt.Sprintf("%s, %d-bit key, %d-byte sectors", s.Cipher, s.KeyBits, s.SectorSize))
		flags := strings.Join(s.Flags, ", ")
		if flags == "" {
			flags = "(none)"
		}
		row("flags", flags)
		for _, k := range s.Keyslots {
			row(fmt.Sprintf("keyslot %d", k.ID), fmt.Sprintf("%s, %s, priority %s", k.Role, k.KDF, k.Priority))
		}
		if s.KMS != nil {
			v := kmsLine(s.KMS.Backend, s.KMS.Key, s.KMS.KeyVersion)
			switch {
			case s.KMS.Error != "":
				v += " (kms: " + s.KMS.Error + ")"
			case s.KMS.Stale:
				v += fmt.Sprintf(" (stale: version %d exists)", s.KMS.LatestVersion)
			case s.KMS.LatestVersion > 0:
				v += " (current)"
			}
			if s.Policy != nil {
				policyRows(s.Policy, row)
			} else {
				row("kms", v)
			}
			lastUnlockRow(s.LastUnlock, row)
		}
		for _, t := range s.TPM {
			row(fmt.Sprintf("tpm keyslot %d", t.Keyslot), tpmLine(t))
		}
		rec := "none"
		if s.Recovery.Present {
			rec = fmt.Sprintf("keyslots %v", s.Recovery.Keyslots)
			if s.Recovery.Escrow != "" {
				rec += ", " + s.Recovery.Escrow
			}
		}
		row("recovery", rec)
		b := "none"
		if s.Backup.Present {
			b = s.Backup.Path + map[bool]string{true: " (current)", false: " (stale)"}[s.Backup.Current]
		}
		row("backup", b)
		row("header", "primary "+s.Header.Primary+"; secondary "+s.Header.Secondary)
		w.Flush()
		for _, p := range s.Problems {
			e.printf("  problem: %s\n", p)
		}
	}
}

// statusRef names a volume in status's text as volume.Volume.Ref does:
// its name, else its device (else its UUID).
func statusRef(s volume.Status) string {
	for _, r := range []string{s.Name, s.Device, s.UUID} {
		if r != "" {
			return r
		}
	}
	return "-"
}
