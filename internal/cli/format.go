package cli

import (
	"fmt"

	"github.com/atrest/atrest/pkg/volume"
	ucli "github.com/urfave/cli/v2"
)

func formatCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:      "format",
		Usage:     "make a blank device an encrypted atrest volume",
		ArgsUsage: "DEVICE",
		Description: `Formats DEVICE (a block device or image file) as a LUKS2 volume
(aes-xts-plain64, 512-bit key) with a platform keyslot whose secret the
configured KMS protects, and a recovery key by policy (--recovery).

Before anything is written, DEVICE must not be mounted, used as swap, or
held by another device, and must carry no signature (filesystem, partition
table, LUKS, LVM, RAID) and no data; --force wipes what is there (never
a device in use). The KMS is asked before anything is written, so an
unreachable KMS leaves DEVICE untouched.

EXAMPLES:
   atrest format /dev/nvme1n1 --name data1
   atrest -o json format /dev/sdb --name scratch --recovery escrow
   atrest format /dev/sdc --name old --force   # destroys what is on /dev/sdc

` + exitCodeHelp(),
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "name", Aliases: []string{"n"}, Usage: "volume name: the mapping /dev/mapper/`NAME`"},
			&ucli.BoolFlag{Name: "force", Usage: "wipe existing signatures and data (never overrides a device in use)"},
			&ucli.StringFlag{Name: "recovery", Usage: "recovery key: escrow (to Vault KV), print (shown once), or none; default from the configuration"},
			&ucli.UintFlag{Name: "sector-size", Value: 4096, Usage: "encryption sector size: 512 or 4096"},
			&ucli.StringFlag{Name: "label", Usage: "LUKS2 label (default: the name)"},
			&ucli.BoolFlag{Name: "discard", Usage: "pass discards (TRIM) through; reveals which blocks are unused"},
			&ucli.BoolFlag{Name: "workqueues", Usage: "keep dm-crypt's workqueues on SSD/NVMe (bypassed there by default)"},
		},
		Action: func(c *ucli.Context) error {
			if c.NArg() != 1 || c.String("name") == "" {
				return usagef("usage: atrest format DEVICE --name NAME", "expected one device and --name")
			}
			ss := c.Uint("sector-size")
			if ss != 512 && ss != 4096 {
				return usagef("use --sector-size 512 or 4096", fmt.Sprintf("sector size %d not supported", ss))
			}
			m, err := e.manager()
			if err != nil {
				return err
			}
			res, err := m.Format(c.Context, volume.FormatOptions{
				Device: c.Args().First(), Name: c.String("name"), Force: c.Bool("force"),
				Recovery: c.String("recovery"), SectorSize: uint32(ss), Label: c.String("label"),
				Discard: c.Bool("discard"), Workqueues: c.Bool("workqueues"),
				Progress: e.progress("wiping signatures"),
			})
			if err != nil {
				return err
			}
			defer res.Recovery.Wipe()
			for _, w := range res.Warnings {
				e.warn("%s", w)
			}
			if e.json {
				return e.printJSONKey(formatJSON(res), res.Recovery)
			}
			e.printf("formatted %s as %s (UUID %s)\n", res.Device, res.Name, res.UUID)
			for _, s := range res.Wiped {
				e.printf("  wiped: %s\n", s)
			}
			e.printf("  platform keyslot %d, protected by %s\n", res.PlatformKeyslot, kmsLine(res.KMS, res.Key, res.KeyVersion))
			e.printRecovery(res.Recovery)
			if res.Backup != "" {
				e.printf("  header backup: %s\n", res.Backup)
			}
			return nil
		},
	}
}

func kmsLine(backend, key string, version int) string {
	if version > 0 {
		return fmt.Sprintf("%s key %q version %d", backend, key, version)
	}
	return fmt.Sprintf("%s %q", backend, key)
}

// printRecovery shows a recovery arrangement after the use case returned
// (format, adopt: there is no old recovery key to lose).
func (e *env) printRecovery(r *volume.Recovery) {
	_ = e.showRecovery(r)
}
