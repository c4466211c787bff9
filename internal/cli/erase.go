package cli

import (
	"fmt"

	ucli "github.com/urfave/cli/v2"
)

func eraseCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:      "erase",
		Usage:     "crypto-erase a volume for a disk that leaves the fleet",
		ArgsUsage: "NAME|DEVICE|UUID",
		Description: `Closes the volume (refused while mounted), destroys every keyslot and
token in both header copies, overwrites the keyslots area, and deletes the
header backups in the state directory. Afterwards nothing opens the data:
not the KMS, not the recovery key, not a backup atrest kept.

This cannot be undone. It needs --yes and --confirm with the volume's name.

EXAMPLES:
   atrest erase data1 --yes --confirm data1

` + exitCodeHelp(),
		Flags: []ucli.Flag{
			&ucli.BoolFlag{Name: "yes", Usage: "really erase"},
			&ucli.StringFlag{Name: "confirm", Usage: "the volume's `NAME`, repeated"},
		},
		Action: func(c *ucli.Context) error {
			v, err := e.one(c)
			if err != nil {
				return err
			}
			if !c.Bool("yes") {
				return usagef(fmt.Sprintf("run: atrest erase %s --yes --confirm %s", c.Args().First(), v.Name),
					"erase destroys the volume's keys for good and needs --yes")
			}
			m, _ := e.manager()
			res, err := m.Erase(c.Context, v, c.String("confirm"))
			if err != nil {
				return err
			}
			for _, w := range res.Warnings {
				e.warn("%s", w)
			}
			if e.json {
				e.printJSON(eraseDoc{schema: v1, Name: res.Name, UUID: res.UUID, Device: res.Device, Closed: res.Closed, Erased: true, Warnings: nonNil(res.Warnings),
					KeyDestroyed: res.KeyDestroyed, KeyObjects: res.KeyObjects})
				return nil
			}
			if res.Closed {
				e.printf("%s: closed\n", res.Name)
			}
			e.printf("%s: erased; no key opens %s any more\n", res.Name, res.Device)
			if res.KeyDestroyed != "" {
				e.printf("  kms key %q destroyed (%d key objects)\n", res.KeyDestroyed, res.KeyObjects)
			}
			return nil
		},
	}
}
