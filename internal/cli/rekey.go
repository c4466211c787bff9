package cli

import (
	"fmt"

	"github.com/atrest/atrest/pkg/volume"
	ucli "github.com/urfave/cli/v2"
)

func rekeyCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:      "rekey",
		Usage:     "give volumes a fresh platform secret (and optionally a new recovery key)",
		ArgsUsage: "NAME|DEVICE|UUID... | --all",
		Description: `Adds a new platform keyslot with a fresh secret protected by the
configured KMS, verifies it opens the volume through the KMS, then removes
the old keyslot and token. The volume key and the data do not change, so an
open volume stays open. A rekey that was interrupted (power loss, kill) is
detected and finished, or undone, by the next rekey of that volume. With
--recovery in mode print, each volume's new recovery key is printed (with
-o json, that volume's part of the document) before its old recovery
keyslot is removed.

EXAMPLES:
   atrest rekey data1
   atrest rekey --all
   atrest rekey data1 --recovery --recovery-mode escrow

` + exitCodeHelp(),
		Flags: []ucli.Flag{
			&ucli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "every atrest volume"},
			&ucli.BoolFlag{Name: "recovery", Usage: "also replace the recovery key"},
			&ucli.StringFlag{Name: "recovery-mode", Usage: "with --recovery: escrow, print or none (default from the configuration)"},
		},
		Action: func(c *ucli.Context) error {
			vols, err := e.find(c.Context, c.Args().Slice(), c.Bool("all"))
			if err != nil {
				return err
			}
			m, _ := e.manager()
			var errs []error
			list := &jsonList{e: e}
			// One volume after the other, the KMS asked in batches for all
			// (RekeyEach). A printed recovery key is output by show,
			// before the old recovery keyslot goes; every other result
			// once its volume is done.
			shown := false
			show := func(res *volume.RekeyResult) error {
				shown = true
				return e.showRekey(list, res)
			}
			o := volume.RekeyOptions{Recovery: c.Bool("recovery"), RecoveryMode: c.String("recovery-mode"), Show: show}
			m.RekeyEach(c.Context, vols, o, func(v *volume.Volume, res *volume.RekeyResult, err error) {
				defer func() { shown = false }()
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", v.Name, err))
					if !shown {
						_ = list.add(rekeyResult{Name: v.Name, UUID: v.UUID(), failed: failure(err)}, nil)
					}
					return
				}
				if !shown {
					_ = e.showRekey(list, res)
				}
				res.Recovery.Wipe()
				for _, w := range res.Warnings {
					e.warn("%s: %s", res.Name, w)
				}
			})
			list.close()
			return joinVolumeErrors(e, errs)
		},
	}
}

// showRekey outputs one rekeyed volume: a JSON element, or text lines.
func (e *env) showRekey(list *jsonList, res *volume.RekeyResult) error {
	if e.json {
		return list.add(rekeyResult{Name: res.Name, UUID: res.UUID, rekeyed: &rekeyed{
			OldKeyslot: res.OldKeyslot, NewKeyslot: res.NewKeyslot, KMS: kmsDoc{res.KMS, res.Key, res.KeyVersion},
			Recovery: recoveryJSON(res.Recovery), Resumed: res.Resumed, Warnings: nonNil(res.Warnings),
		}}, res.Recovery)
	}
	if res.Resumed != "" {
		e.printf("%s: found an interrupted change and %s it\n", res.Name, res.Resumed)
	}
	if res.OldKeyslot >= 0 {
		e.printf("%s: rekeyed, platform keyslot %d -> %d, %s\n", res.Name, res.OldKeyslot, res.NewKeyslot, kmsLine(res.KMS, res.Key, res.KeyVersion))
	}
	return e.showRecovery(res.Recovery)
}

func rewrapCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:      "rewrap",
		Usage:     "move volume tokens to the KEK's newest version (no keyslot or data change)",
		ArgsUsage: "NAME|DEVICE|UUID... | --all",
		Description: `After the KEK was rotated in the KMS, rewrap re-encrypts each platform
secret under the newest key version inside the KMS (one round trip per
key for all volumes), checks the result opens the keyslot, and replaces
the token. Tokens already at the newest version are left alone unless
--force.

With --to BACKEND (local, tpm, vault-transit, kmip), rewrap moves the
tokens under that backend's configured KEK instead: each secret is
unwrapped by the KMS its token names and wrapped by the target, checked
against its keyslot, and the token replaced; no keyslot changes. So
file-keystore volumes move under the TPM with: atrest rewrap --all --to tpm

EXAMPLES:
   atrest rewrap --all
   atrest -o json rewrap data1
   atrest rewrap --all --to tpm

` + exitCodeHelp(),
		Flags: []ucli.Flag{
			&ucli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "every atrest volume"},
			&ucli.BoolFlag{Name: "force", Usage: "rewrap tokens already at the newest version too"},
			&ucli.StringFlag{Name: "to", Usage: "move the tokens under this backend's KEK (local, tpm, vault-transit, kmip)"},
		},
		Action: func(c *ucli.Context) error {
			vols, err := e.find(c.Context, c.Args().Slice(), c.Bool("all"))
			if err != nil {
				return err
			}
			m, _ := e.manager()
			if c.IsSet("to") {
				return e.rewrapTo(c.Context, m, vols, c.String("to"))
			}
			var errs []error
			out := volumesDoc[rewrapResult]{v1, []rewrapResult{}}
			for _, r := range m.Rewrap(c.Context, vols, c.Bool("force")) {
				out.Volumes = append(out.Volumes, rewrapResult{r.Name, r.UUID, r.KMS, r.Key, r.From, r.To, r.Skipped, nonNil(r.Warnings), failure(r.Err)})
				for _, w := range r.Warnings {
					e.warn("%s: %s", r.Name, w)
				}
				switch {
				case r.Err != nil:
					errs = append(errs, fmt.Errorf("%s: %w", r.Name, r.Err))
				case r.Skipped:
					e.printf("%s: already at %s version %d\n", r.Name, r.Key, r.To)
				default:
					e.printf("%s: rewrapped %s version %d -> %d\n", r.Name, r.Key, r.From, r.To)
				}
			}
			if e.json {
				e.printJSON(out)
			}
			return joinVolumeErrors(e, errs)
		},
	}
}
