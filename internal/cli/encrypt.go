package cli

import (
	"time"

	"github.com/atrest/atrest/pkg/blockdev/overwrite"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/volume"
	ucli "github.com/urfave/cli/v2"
)

func encryptCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:      "encrypt",
		Usage:     "encrypt an unmounted ext2/3/4, btrfs or XFS file system in place, making it an atrest volume",
		ArgsUsage: "DEVICE",
		Description: `Encrypts the file system on DEVICE in place, offline, as cryptsetup
reencrypt --encrypt --reduce-device-size 32M does (docs/reencrypt.md): the
LUKS2 header takes the device's first 16 MiB, whose data moves to its end,
and the data is encrypted from the end backwards, each hotzone moved 16 MiB.
The file system must be unmounted and end at least 32 MiB before the device
does: shrink it first (ext2/3/4: e2fsck -f DEVICE && resize2fs DEVICE SIZE;
btrfs, mounted: btrfs filesystem resize SIZE MOUNTPOINT; XFS cannot shrink:
grow the device without growing the file system; the refusal names the
size). A device with a LUKS header, anything but one ext2/3/4, single-device
btrfs or internal-log XFS file system, or one in use is refused, with
nothing written. The
volume gets a platform keyslot through the configured KMS and a recovery key
under the recovery policy (printed before anything is written), like
atrest format. Interrupted, run the same command again: it resumes (it
resumes one cryptsetup started too), and until then atrest open refuses the
volume (exit 21).

EXAMPLES:
   e2fsck -f /dev/sdb1 && resize2fs /dev/sdb1 900G
   atrest encrypt /dev/sdb1 --name data1

` + exitCodeHelp(),
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "name", Usage: "the volume name (/dev/mapper/NAME)", Required: true},
			&ucli.StringFlag{Name: "recovery-mode", Usage: "escrow, print or none (default from the configuration)"},
		},
		Action: func(c *ucli.Context) error {
			if c.NArg() != 1 {
				return usagef("usage: atrest encrypt DEVICE --name NAME", "expected exactly one device")
			}
			m, err := e.manager()
			if err != nil {
				return err
			}
			mode, err := e.recoveryModeFor(c, m, "the key is printed before the encryption starts")
			if err != nil {
				return err
			}
			start := time.Now()
			progress := e.progress("encrypt " + c.String("name"))
			res, err := m.Encrypt(c.Context, volume.EncryptOptions{
				Device: c.Args().First(), Name: c.String("name"), Recovery: mode,
				Show: func(r *volume.EncryptResult) error { return e.showRecovery(r.Recovery) },
				Progress: func(done, total uint64) {
					progress(overwrite.Progress{Done: int64(done), Total: int64(total)})
				},
			})
			if err != nil {
				return err
			}
			defer res.Recovery.Wipe()
			took := time.Since(start)
			for _, w := range res.Warnings {
				e.warn("%s: %s", res.Name, w)
			}
			if e.json {
				e.printJSON(encryptDoc{schema: v1, Device: res.Device, Name: res.Name, UUID: res.UUID, PlatformKeyslot: res.PlatformKeyslot,
					Bytes: res.Bytes, Seconds: took.Seconds(), Resumed: res.Resumed, Recovery: recoveryJSON(res.Recovery), Backup: res.Backup, Warnings: nonNil(res.Warnings)})
				return nil
			}
			if res.Resumed {
				e.printf("%s: resumed an encryption in place found on the device\n", res.Name)
			}
			e.printf("%s: encrypted %d bytes of %s in place in %s (UUID %s), platform keyslot %d\n", res.Name, res.Bytes, res.Device, took.Round(time.Millisecond), res.UUID, res.PlatformKeyslot)
			if res.Recovery != nil && res.Recovery.Mode != config.RecoveryPrint {
				_ = e.showRecovery(res.Recovery)
			}
			return nil
		},
	}
}

// encryptDoc is atrest -o json encrypt's document.
type encryptDoc struct {
	schema
	Device          string       `json:"device"`
	Name            string       `json:"name"`
	UUID            string       `json:"uuid"`
	PlatformKeyslot int          `json:"platform_keyslot"`
	Bytes           uint64       `json:"bytes"`
	Seconds         float64      `json:"seconds"`
	Resumed         bool         `json:"resumed"`
	Recovery        *recoveryDoc `json:"recovery"`
	Backup          string       `json:"backup"`
	Warnings        []string     `json:"warnings"`
}
