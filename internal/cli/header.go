package cli

import (
	"strings"

	"github.com/atrest/atrest/pkg/volume"
	ucli "github.com/urfave/cli/v2"
)

func headerCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:  "header",
		Usage: "back up, restore and check LUKS2 headers",
		Subcommands: []*ucli.Command{
			{
				Name:      "backup",
				Usage:     "write a header backup (cryptsetup luksHeaderBackup format)",
				ArgsUsage: "NAME|DEVICE|UUID",
				Description: `Without --file the backup goes to the state directory, where status
checks that it is current (atrest refreshes it after every change it
makes). A backup holds the keyslots: keep it like a key.

EXAMPLES:
   atrest header backup data1
   atrest header backup data1 --file /root/data1.hdr

` + exitCodeHelp(),
				Flags: []ucli.Flag{&ucli.StringFlag{Name: "file", Aliases: []string{"f"}, TakesFile: true, Usage: "write to `FILE` (must not exist; created 0400)"}},
				Action: func(c *ucli.Context) error {
					v, err := e.one(c)
					if err != nil {
						return err
					}
					m, _ := e.manager()
					path, err := m.HeaderBackup(c.Context, v, c.String("file"))
					if err != nil {
						return err
					}
					if e.json {
						e.printJSON(backupDoc{v1, v.Name, v.UUID(), path})
						return nil
					}
					e.printf("%s: header backup written to %s\n", v.Name, path)
					return nil
				},
			},
			{
				Name:      "restore",
				Usage:     "write a header backup back to a device",
				ArgsUsage: "DEVICE",
				Description: `Restores the header from --backup (atrest's or cryptsetup's backup file),
or from the state directory's backup of the device's volume. The backup's
UUID must match the device's header unless --force (needed too when the
device's header is unreadable). A backup taken before a re-encryption of
the volume is refused (exit 4, backup-stale): its volume key does not
decrypt the data re-encrypted since, and while a re-encryption is under way
it would abandon it; --force restores it anyway (for a volume whose data
is known not to matter, or whose re-encrypted part will be rewritten). The
header being replaced is kept as the previous backup, so a wrong restore
can be undone.

EXAMPLES:
   atrest header restore /dev/nvme1n1 --backup /var/lib/atrest/backups/<uuid>.luks2 --force
   atrest header restore /dev/nvme1n1

` + exitCodeHelp(),
				Flags: []ucli.Flag{
					&ucli.StringFlag{Name: "backup", Aliases: []string{"b"}, TakesFile: true, Usage: "backup `FILE`"},
					&ucli.BoolFlag{Name: "force", Usage: "restore a backup of another UUID, onto an unreadable header, or one taken before a re-encryption (the data re-encrypted since does not decrypt under it)"},
				},
				Action: func(c *ucli.Context) error {
					if c.NArg() != 1 {
						return usagef("usage: atrest header restore DEVICE [--backup FILE]", "expected exactly one device")
					}
					if err := checkRefs(c.Args().First()); err != nil {
						return err
					}
					m, err := e.manager()
					if err != nil {
						return err
					}
					h, err := m.HeaderRestore(c.Context, c.Args().First(), volume.RestoreOptions{Backup: c.String("backup"), Force: c.Bool("force")})
					if err != nil {
						return err
					}
					if e.json {
						e.printJSON(restoreDoc{v1, c.Args().First(), h.UUID, true})
						return nil
					}
					e.printf("%s: header restored (UUID %s)\n", c.Args().First(), h.UUID)
					return nil
				},
			},
			{
				Name:      "check",
				Usage:     "validate both header copies; --repair fixes a damaged one",
				ArgsUsage: "NAME|DEVICE|UUID",
				Description: `Reads and validates both LUKS2 header copies. With --repair, a damaged
or outdated copy is rewritten from the good one. When both are damaged,
the exit code is 7 and the message names the backup to restore.

EXAMPLES:
   atrest header check data1
   atrest header check --repair /dev/nvme1n1

` + exitCodeHelp(),
				Flags: []ucli.Flag{&ucli.BoolFlag{Name: "repair", Usage: "rewrite a damaged or outdated copy from the good one"}},
				Action: func(c *ucli.Context) error {
					if c.NArg() != 1 {
						return usagef("usage: atrest header check [--repair] NAME|DEVICE", "expected exactly one volume")
					}
					dev := c.Args().First()
					if err := checkRefs(dev); err != nil {
						return err
					}
					m, err := e.manager()
					if err != nil {
						return err
					}
					if !strings.HasPrefix(dev, "/") {
						v, err := m.Find(c.Context, dev)
						if err != nil {
							return err
						}
						dev = v.Device
					}
					res, err := m.HeaderCheck(c.Context, dev, c.Bool("repair"))
					if err != nil {
						return err
					}
					if e.json {
						e.printJSON(checkDoc{v1, res})
					} else {
						e.printf("%s: primary %s; secondary %s\n", res.Device, res.Header.Primary, res.Header.Secondary)
						if res.Repaired {
							e.printf("%s: repaired\n", res.Device)
						}
					}
					if res.DataProblem != "" {
						e.warn("%s: %s", res.Device, res.DataProblem)
					}
					if res.NeedsRepair {
						e.printf("hint: run atrest header check --repair %s\n", c.Args().First())
						return exitCode(ExitAttention)
					}
					if res.DataProblem != "" {
						return exitCode(ExitAttention)
					}
					return nil
				},
			},
		},
	}
}
