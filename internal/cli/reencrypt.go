package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/atrest/atrest/pkg/blockdev/overwrite"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/volume"
	ucli "github.com/urfave/cli/v2"
)

func reencryptCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:      "reencrypt",
		Usage:     "give volumes a new volume key and re-encrypt their data in place, closed or open and mounted",
		ArgsUsage: "NAME|DEVICE|UUID...",
		Description: `Generates a new volume key, enrols the platform secret under it (and a
new recovery key, under the recovery policy, when the volume has one),
then re-encrypts the data in place, hotzone by hotzone, in cryptsetup's
on-disk format (docs/reencrypt.md). A volume under an unlock policy gets
its policy made again under the new key (every factor of the policy must
answer; each new keyslot is proven before the data is touched). TPM
keyslots are re-sealed to the same PCRs; a PIN keyslot needs its PIN
(--pin-file FILE, or --pin to be asked). A closed volume is re-encrypted in
userspace; an open one online, through dm-crypt, with cryptsetup's
hotzone and overlay mappings under /dev/mapper/NAME, so a mounted file
system keeps working throughout. Interrupted (kill, power loss), the
volume is left in re-encryption with its data intact: run the same command
again to resume it (cryptsetup reencrypt --resume-only can finish it too);
it opens again once the re-encryption is finished. A re-encryption that
cryptsetup started is resumed as well.

With the recovery policy print, the new recovery key is printed before the
re-encryption starts (the old one keeps its keyslot until the end); -o json
is refused with print, since the document is written at the end.

EXAMPLES:
   atrest reencrypt data1
   atrest reencrypt data1 --recovery-mode escrow
   atrest -o json reencrypt data1 --recovery-mode none
   atrest reencrypt data1 --pin-file /run/pin
   atrest reencrypt data1 --resume

` + exitCodeHelp(),
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "recovery-mode", Usage: "for a volume with a recovery key: escrow, print or none (default from the configuration)"},
			&ucli.StringFlag{Name: "hotzone-size", Usage: "the most data one step re-encrypts, e.g. 4M (default 64M); a smaller hotzone holds the file system's I/O to it for less time"},
			&ucli.BoolFlag{Name: "resume", Usage: "only continue a re-encryption found on the device (atrest's or cryptsetup's); with none, nothing is done"},
			&ucli.BoolFlag{Name: "pin", Usage: "the PIN of the volumes' PIN TPM keyslots, re-sealed with it (asked for on the terminal, read as one line from standard input, or from --pin-file)"},
			pinFileFlag,
			&ucli.BoolFlag{Name: "hand-over", Usage: "for an open volume in re-encryption: take over what a killed online run left, finish the hotzone it held and stop, leaving the state `cryptsetup reencrypt --resume-only --active-name NAME` resumes"},
		},
		Action: func(c *ucli.Context) error {
			if c.NArg() == 0 {
				return fmt.Errorf("%w: name the volumes to re-encrypt", volume.ErrInvalidArgument)
			}
			vols, err := e.find(c.Context, c.Args().Slice(), false)
			if err != nil {
				return err
			}
			m, _ := e.manager()
			mode, err := e.recoveryModeFor(c, m, "the key would be output only after the old recovery keyslot is gone")
			if err != nil {
				return err
			}
			hotzone, err := parseHotzone(c.String("hotzone-size"))
			if err != nil {
				return err
			}
			var pin *secret.Key
			if c.Bool("pin") || c.IsSet("pin-file") {
				if pin, err = e.readSecretFlag(c, "pin-file", "TPM PIN", true); err != nil {
					return err
				}
				defer pin.Wipe()
			}
			var errs []error
			list := &jsonList{e: e}
			for _, v := range vols {
				start := time.Now()
				progress := e.progress("reencrypt " + v.Name)
				res, err := m.Reencrypt(c.Context, v, volume.ReencryptOptions{
					RecoveryMode: mode,
					Hotzone:      hotzone,
					Resume:       c.Bool("resume"),
					PIN:          pin,
					HandOver:     c.Bool("hand-over"),
					Show:         func(r *volume.ReencryptResult) error { return e.showRecovery(r.Recovery) },
					Progress: func(done, total uint64) {
						progress(overwrite.Progress{Done: int64(done), Total: int64(total)})
					},
				})
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", v.Name, err))
					_ = list.add(reencryptResult{Name: v.Name, UUID: v.UUID(), failed: failure(err)}, nil)
					continue
				}
				if res.Unchanged {
					_ = list.add(reencryptResult{Name: res.Name, UUID: res.UUID, reencrypted: &reencrypted{
						OldKeyslot: res.OldKeyslot, NewKeyslot: res.NewKeyslot, Unchanged: true, Warnings: nonNil(res.Warnings),
					}}, nil)
					e.printf("%s: nothing to resume (no re-encryption on the device)\n", res.Name)
					continue
				}
				took := time.Since(start)
				_ = list.add(reencryptResult{Name: res.Name, UUID: res.UUID, reencrypted: &reencrypted{
					OldKeyslot: res.OldKeyslot, NewKeyslot: res.NewKeyslot, Bytes: res.Bytes, Seconds: took.Seconds(),
					Recovery: recoveryJSON(res.Recovery), Resumed: res.Resumed, Warnings: nonNil(res.Warnings),
					Policy:  policyJSON(res.Policy),
					Stopped: res.Stopped,
				}}, res.Recovery)
				if res.Stopped {
					e.printf("%s: stopped for cryptsetup after %d of %d bytes: `cryptsetup reencrypt --resume-only --active-name %s %s` continues it (or atrest reencrypt %s)\n", res.Name, res.Done, res.Bytes, res.Name, res.Device, res.Name)
					for _, w := range res.Warnings {
						e.warn("%s: %s", res.Name, w)
					}
					continue
				}
				if res.Resumed {
					e.printf("%s: resumed a re-encryption found on the device\n", res.Name)
				}
				if p := res.Policy; p != nil {
					e.printf("%s: re-encrypted %d bytes in %s under a new volume key, %s -> %s\n", res.Name, res.Bytes, took.Round(time.Millisecond),
						keysLine(volume.Keys{Policy: p.Expr, Keyslots: p.From}), keysLine(volume.Keys{Policy: p.Expr, Keyslots: p.To}))
				} else {
					e.printf("%s: re-encrypted %d bytes in %s under a new volume key, platform keyslot %d -> %d\n", res.Name, res.Bytes, took.Round(time.Millisecond), res.OldKeyslot, res.NewKeyslot)
				}
				if res.Recovery != nil && res.Recovery.Mode != config.RecoveryPrint {
					_ = e.showRecovery(res.Recovery)
				}
				res.Recovery.Wipe()
				for _, w := range res.Warnings {
					e.warn("%s: %s", res.Name, w)
				}
			}
			list.close()
			return joinVolumeErrors(e, errs)
		},
	}
}

// reencryptResult is a re-encrypted volume (reencrypted set) or a failed one.
type reencryptResult struct {
	Name string `json:"name"`
	UUID string `json:"uuid"`
	*reencrypted
	failed
}

type reencrypted struct {
	OldKeyslot int          `json:"old_keyslot"`
	NewKeyslot int          `json:"new_keyslot"`
	Bytes      uint64       `json:"bytes"`
	Seconds    float64      `json:"seconds"`
	Recovery   *recoveryDoc `json:"recovery"`
	Resumed    bool         `json:"resumed"`
	// Unchanged: --resume found no re-encryption to continue.
	Unchanged bool `json:"unchanged,omitempty"`
	// Policy is set for a volume under an unlock policy.
	Policy   *reencPolicyDoc `json:"policy,omitempty"`
	Warnings []string        `json:"warnings"`
	// Stopped: --hand-over stopped the run for cryptsetup.
	Stopped bool `json:"stopped,omitempty"`
}

// reencPolicyDoc is a policy volume's policy, made again under the new
// key: its keyslots before and after.
type reencPolicyDoc struct {
	Expr        string `json:"expr"`
	OldKeyslots []int  `json:"old_keyslots"`
	NewKeyslots []int  `json:"new_keyslots"`
}

func policyJSON(p *volume.ReencryptPolicy) *reencPolicyDoc {
	if p == nil {
		return nil
	}
	return &reencPolicyDoc{Expr: p.Expr, OldKeyslots: nonNil(p.From), NewKeyslots: nonNil(p.To)}
}

// recoveryModeFor is --recovery-mode or the configured policy. -o json is
// refused with mode print for commands that show the key apart from their
// document (why says when).
func (e *env) recoveryModeFor(c *ucli.Context, m *volume.Manager, why string) (string, error) {
	mode := c.String("recovery-mode")
	if mode == "" {
		mode = m.Config().Recovery.Mode
	}
	if e.json && mode == config.RecoveryPrint {
		return "", fmt.Errorf("%w: -o json with recovery mode print (%s): use text output or --recovery-mode escrow|none", volume.ErrInvalidArgument, why)
	}
	return mode, nil
}

// parseHotzone reads --hotzone-size: bytes, or a number with K, M or G
// (binary units, as cryptsetup's --hotzone-size); "" is the default.
func parseHotzone(v string) (uint64, error) {
	if v == "" {
		return 0, nil
	}
	mult := uint64(1)
	num := strings.TrimSuffix(strings.TrimSuffix(v, "iB"), "B")
	if n := len(num); n > 0 {
		switch num[n-1] {
		case 'K', 'k':
			mult, num = 1<<10, num[:n-1]
		case 'M', 'm':
			mult, num = 1<<20, num[:n-1]
		case 'G', 'g':
			mult, num = 1<<30, num[:n-1]
		}
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil || n == 0 || n > (1<<30)/mult || n*mult%4096 != 0 {
		return 0, fmt.Errorf("%w: --hotzone-size %q: a multiple of 4 KiB up to 1G, e.g. 4M", volume.ErrInvalidArgument, v)
	}
	return n * mult, nil
}
