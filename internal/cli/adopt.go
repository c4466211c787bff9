package cli

import (
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/volume"
	ucli "github.com/urfave/cli/v2"
)

func adoptCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:      "adopt",
		Usage:     "take over a LUKS2 volume made by cryptsetup or vaultlocker",
		ArgsUsage: "DEVICE",
		Description: `Opens an existing LUKS2 volume with its passphrase (asked for on the
terminal, one line of standard input, or --key-file) or with the key that
vaultlocker stored in Vault (--vaultlocker), then adds a platform keyslot
under the configured KMS and a recovery key by policy. --remove-old
removes the keyslot that opened it once the new one is verified. LUKS1
volumes are refused: convert them with cryptsetup convert first.

EXAMPLES:
   atrest adopt /dev/sdb --name data2 --key-file /root/data2.key
   atrest adopt /dev/sdc --name ceph1 --vaultlocker --remove-old

` + exitCodeHelp(),
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "name", Aliases: []string{"n"}, Usage: "volume name: the mapping /dev/mapper/`NAME`"},
			keyFileFlag,
			&ucli.BoolFlag{Name: "vaultlocker", Usage: "fetch the key vaultlocker stored at <mount>/<hostname>/<uuid>"},
			&ucli.StringFlag{Name: "vaultlocker-mount", Value: "secret", Usage: "vaultlocker's KV mount"},
			&ucli.IntFlag{Name: "vaultlocker-kv-version", Value: 1, Usage: "that mount's KV version (vaultlocker's default is 1)"},
			&ucli.BoolFlag{Name: "remove-old", Usage: "remove the keyslot that opened the volume, once the platform keyslot works"},
			&ucli.StringFlag{Name: "recovery", Usage: "recovery key: escrow, print or none (default from the configuration)"},
		},
		Action: func(c *ucli.Context) error {
			if c.NArg() != 1 || c.String("name") == "" {
				return usagef("usage: atrest adopt DEVICE --name NAME", "expected one device and --name")
			}
			o := volume.AdoptOptions{
				Device: c.Args().First(), Name: c.String("name"), RemoveOld: c.Bool("remove-old"), Recovery: c.String("recovery"),
				Vaultlocker: c.Bool("vaultlocker"), VaultlockerMount: c.String("vaultlocker-mount"), VaultlockerKV: c.Int("vaultlocker-kv-version"),
			}
			m, err := e.manager()
			if err != nil {
				return err
			}
			if !o.Vaultlocker {
				var key *secret.Key
				if key, err = e.readSecret(c, "passphrase of "+o.Device); err != nil {
					return err
				}
				defer key.Wipe()
				o.Passphrase = key
			}
			res, err := m.Adopt(c.Context, o)
			if err != nil {
				return err
			}
			defer res.Recovery.Wipe()
			for _, w := range res.Warnings {
				e.warn("%s: %s", res.Name, w)
			}
			if e.json {
				return e.printJSONKey(adoptDoc{schema: v1, Name: res.Name, UUID: res.UUID, Device: res.Device,
					OldKeyslot: res.OldKeyslot, OldRemoved: res.Removed, PlatformKeyslot: res.PlatformKeyslot,
					KMS: kmsDoc{res.KMS, res.Key, res.KeyVersion}, Recovery: recoveryJSON(res.Recovery), Warnings: nonNil(res.Warnings)}, res.Recovery)
			}
			e.printf("adopted %s as %s (UUID %s)\n", res.Device, res.Name, res.UUID)
			e.printf("  platform keyslot %d, protected by %s\n", res.PlatformKeyslot, kmsLine(res.KMS, res.Key, res.KeyVersion))
			if res.Removed {
				e.printf("  old keyslot %d removed\n", res.OldKeyslot)
			} else {
				e.printf("  old keyslot %d kept (remove it with: cryptsetup luksKillSlot %s %d)\n", res.OldKeyslot, res.Device, res.OldKeyslot)
			}
			e.printRecovery(res.Recovery)
			return nil
		},
	}
}
