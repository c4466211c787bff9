package cli

import (
	"github.com/atrest/atrest/pkg/volume"
	ucli "github.com/urfave/cli/v2"
)

func recoveryCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:  "recovery",
		Usage: "use and manage recovery keys",
		Subcommands: []*ucli.Command{
			{
				Name:      "unlock",
				Usage:     "open a volume with its recovery key, without the KMS",
				ArgsUsage: "NAME|DEVICE|UUID",
				Description: `Opens the volume with its recovery key (or any passphrase of one of its
keyslots), asked for on the terminal without echo, read as one line from
standard input, or from --key-file. No KMS is contacted.

EXAMPLES:
   atrest recovery unlock /dev/nvme1n1
   atrest recovery unlock data1 --key-file /root/data1.recovery

` + exitCodeHelp(),
				Flags: []ucli.Flag{keyFileFlag, &ucli.BoolFlag{Name: "read-only", Usage: "map read-only"}},
				Action: func(c *ucli.Context) error {
					v, err := e.one(c)
					if err != nil {
						return err
					}
					key, err := e.readSecret(c, "recovery key for "+v.Device)
					if err != nil {
						return err
					}
					defer key.Wipe()
					m, _ := e.manager()
					res, err := m.RecoveryUnlock(c.Context, v, key, c.Bool("read-only"))
					if err != nil {
						return err
					}
					if e.json {
						e.printJSON(unlockDoc{v1, res.Name, res.UUID, res.Device, "/dev/mapper/" + res.Name, res.AlreadyOpen})
						return nil
					}
					if res.AlreadyOpen {
						e.printf("%s: already open at /dev/mapper/%s\n", res.Name, res.Name)
					} else {
						e.printf("%s: opened with the recovery key at /dev/mapper/%s\n", res.Name, res.Name)
					}
					return nil
				},
			},
			{
				Name:      "rotate",
				Usage:     "replace the recovery key (escrowed or printed once)",
				ArgsUsage: "NAME|DEVICE|UUID",
				Description: `Enrolls a new recovery key, verifies it, then removes the old recovery
keyslots. With --mode print the new key is printed first; the old
recovery keyslots go only once it is out, and a run cut short before that
keeps the old key. The platform keyslot opens the volume, so the KMS must
be reachable.

EXAMPLES:
   atrest recovery rotate data1
   atrest recovery rotate data1 --mode print

` + exitCodeHelp(),
				Flags: []ucli.Flag{&ucli.StringFlag{Name: "mode", Usage: "escrow or print (default from the configuration)"}},
				Action: func(c *ucli.Context) error {
					v, err := e.one(c)
					if err != nil {
						return err
					}
					m, _ := e.manager()
					// The key is output before the old recovery keyslots go.
					shown := false
					show := func(rec *volume.Recovery) error {
						shown = true
						return e.showRotated(v, rec, nil)
					}
					rec, warnings, err := m.RecoveryRotate(c.Context, v, c.String("mode"), show)
					if err != nil {
						return err
					}
					defer rec.Wipe()
					for _, w := range warnings {
						e.warn("%s: %s", v.Name, w)
					}
					if !shown {
						if err := e.showRotated(v, rec, warnings); err != nil {
							return err
						}
					}
					if e.json {
						return nil
					}
					e.printf("  old recovery keyslots removed\n")
					return nil
				},
			},
			{
				Name:      "reseal",
				Usage:     "re-enroll the platform keyslot under the current KMS, using the recovery key",
				ArgsUsage: "NAME|DEVICE|UUID",
				Description: `For a KMS that lost its key, or a node that moved to another KMS: opens
the volume with the recovery key (asked for like recovery unlock), adds a
platform keyslot protected by the KMS configured now, verifies it, and
removes the old platform keyslot.

EXAMPLES:
   atrest recovery reseal data1
   atrest recovery reseal /dev/nvme1n1 --key-file - < data1.recovery

` + exitCodeHelp(),
				Flags: []ucli.Flag{keyFileFlag},
				Action: func(c *ucli.Context) error {
					v, err := e.one(c)
					if err != nil {
						return err
					}
					key, err := e.readSecret(c, "recovery key for "+v.Device)
					if err != nil {
						return err
					}
					defer key.Wipe()
					m, _ := e.manager()
					res, err := m.Reseal(c.Context, v, key)
					if err != nil {
						return err
					}
					e.resealReport(res)
					return nil
				},
			},
		},
	}
}

// resealReport outputs a reseal's new platform keyslot.
func (e *env) resealReport(res *volume.RekeyResult) {
	for _, w := range res.Warnings {
		e.warn("%s: %s", res.Name, w)
	}
	if e.json {
		e.printJSON(resealDoc{v1, res.Name, res.UUID, res.OldKeyslot, res.NewKeyslot, kmsDoc{res.KMS, res.Key, res.KeyVersion}, nonNil(res.Warnings)})
		return
	}
	e.printf("%s: resealed, platform keyslot %d protected by %s\n", res.Name, res.NewKeyslot, kmsLine(res.KMS, res.Key, res.KeyVersion))
	if res.OldKeyslot >= 0 {
		e.printf("  old platform keyslot %d removed\n", res.OldKeyslot)
	}
}

// showRotated outputs a rotated recovery key. Shown before the use case
// returned (mode print), its warnings are not known yet: they go to stderr.
func (e *env) showRotated(v *volume.Volume, rec *volume.Recovery, warnings []string) error {
	if e.json {
		return e.printJSONKey(rotateDoc{v1, v.Name, v.UUID(), recoveryJSON(rec), nonNil(warnings)}, rec)
	}
	e.printf("%s: new recovery key enrolled\n", v.Name)
	return e.showRecovery(rec)
}
