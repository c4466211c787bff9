package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/tpm2"
	"github.com/atrest/atrest/pkg/volume"
	ucli "github.com/urfave/cli/v2"
)

var pinFileFlag = &ucli.StringFlag{
	Name: "pin-file", TakesFile: true,
	Usage: "read the TPM PIN from `FILE` (\"-\" for standard input; one trailing newline is dropped); without it, the PIN is asked for on the terminal, or read as one line from standard input",
}

type tpmDoc struct {
	schema
	Name       string              `json:"name"`
	UUID       string              `json:"uuid"`
	Added      []volume.TPMKeyslot `json:"added"`
	Removed    []int               `json:"removed"`
	Unenforced bool                `json:"unenforced"`
	Warnings   []string            `json:"warnings"`
}

func tpmCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:  "tpm",
		Usage: "TPM keyslots with systemd-tpm2 tokens (systemd-cryptenroll's format)",
		Subcommands: []*ucli.Command{
			{
				Name:      "enroll",
				Usage:     "add a keyslot whose passphrase the TPM seals to PCR values (and a PIN)",
				ArgsUsage: "NAME|DEVICE|UUID",
				Description: `Seals a new secret with the TPM at tpm.device under the PCRs (systemd's
syntax, 7+11; default tpm.pcrs) and optionally a PIN, adds a keyslot whose
passphrase is its base64, and a systemd-tpm2 token as systemd 252 writes
it: systemd-cryptsetup (crypttab tpm2-device=auto) and cryptsetup's token
plugin open the volume with it. The volume key comes through the platform
keyslot, so the KMS must answer. The new keyslot is verified by unsealing
the stored token and opening it before the command succeeds.

EXAMPLES:
   atrest tpm enroll data1
   atrest tpm enroll data1 --pcrs 7+11 --pin

` + exitCodeHelp(),
				Flags: []ucli.Flag{
					&ucli.StringFlag{Name: "pcrs", Usage: "PCRs to seal to, as 7+11 (\"\" for none: only the TPM binds)"},
					&ucli.StringFlag{Name: "bank", Usage: "PCR bank, sha256 or sha1 (default: the one systemd would pick)"},
					&ucli.BoolFlag{Name: "pin", Usage: "also require a PIN (asked for on the terminal, read as one line from standard input, or from --pin-file)"},
					pinFileFlag,
				},
				Action: func(c *ucli.Context) error {
					v, err := e.one(c)
					if err != nil {
						return err
					}
					m, _ := e.manager()
					opts := volume.TPMOptions{PCRs: m.Config().TPM.PCRs, Bank: tpm2.Bank(c.String("bank"))}
					if c.IsSet("pcrs") {
						if opts.PCRs, err = parsePCRs(c.String("pcrs")); err != nil {
							return err
						}
					}
					if c.Bool("pin") || c.IsSet("pin-file") {
						if opts.PIN, err = e.readSecretFlag(c, "pin-file", "TPM PIN for "+v.Device, true); err != nil {
							return err
						}
						defer opts.PIN.Wipe()
					}
					res, err := m.TPMEnroll(c.Context, v, opts)
					if err != nil {
						return err
					}
					return e.tpmReport(res, "enrolled")
				},
			},
			{
				Name:      "remove",
				Usage:     "remove the volume's TPM keyslots and their tokens",
				ArgsUsage: "NAME|DEVICE|UUID",
				Description: `Removes every TPM keyslot (systemd-tpm2 token) of the volume, or the one
--keyslot names, atrest's or systemd-cryptenroll's alike. The platform
and recovery keyslots stay.

` + exitCodeHelp(),
				Flags: []ucli.Flag{&ucli.IntFlag{Name: "keyslot", Value: -1, Usage: "only this keyslot"}},
				Action: func(c *ucli.Context) error {
					v, err := e.one(c)
					if err != nil {
						return err
					}
					m, _ := e.manager()
					res, err := m.TPMRemove(c.Context, v, c.Int("keyslot"))
					if err != nil {
						return err
					}
					return e.tpmReport(res, "removed")
				},
			},
			{
				Name:      "reseal",
				Usage:     "seal the volume's TPM keyslots again to today's PCR values",
				ArgsUsage: "NAME|DEVICE|UUID",
				Description: `For each TPM keyslot whose PCRs no longer match (after a firmware or boot
loader update; status says which), seals a new secret to today's values
with the same PCRs, bank and PIN, enrolls and verifies it, then removes
the old keyslot. The volume key comes through the platform keyslot (the
KMS vouches for the node), or with --recovery from the recovery key (the
operator vouches; the KMS is not asked). --force reseals keyslots that
still match. atrest open and atrestd do this on their own when a network
KMS opened the volume and tpm.reseal is auto (docs/tpm.md).

` + exitCodeHelp(),
				Flags: []ucli.Flag{
					&ucli.BoolFlag{Name: "force", Usage: "reseal keyslots whose PCRs still match too"},
					&ucli.BoolFlag{Name: "recovery", Usage: "take the volume key from the recovery key (asked for on the terminal, one line of standard input, or --key-file) instead of the KMS: for a kms: tpm volume whose sealed KEK no longer unseals"},
					keyFileFlag,
					&ucli.BoolFlag{Name: "pin", Usage: "the PIN of the PIN keyslots (asked for on the terminal, read as one line from standard input, or from --pin-file); it becomes their PIN"},
					pinFileFlag,
				},
				Action: func(c *ucli.Context) error {
					v, err := e.one(c)
					if err != nil {
						return err
					}
					var pin *secret.Key
					if c.Bool("pin") || c.IsSet("pin-file") {
						if pin, err = e.readSecretFlag(c, "pin-file", "TPM PIN for "+v.Device, true); err != nil {
							return err
						}
						defer pin.Wipe()
					}
					o := volume.TPMResealOptions{PIN: pin, Force: c.Bool("force")}
					if c.Bool("recovery") || c.IsSet("key-file") {
						if o.RecoveryKey, err = e.readSecret(c, "recovery key for "+v.Device); err != nil {
							return err
						}
						defer o.RecoveryKey.Wipe()
					}
					m, _ := e.manager()
					res, err := m.TPMReseal(c.Context, v, o)
					if err != nil {
						return err
					}
					return e.tpmReport(res, "resealed")
				},
			},
		},
	}
}

func (e *env) tpmReport(res *volume.TPMResult, verb string) error {
	for _, w := range res.Warnings {
		e.warn("%s: %s", res.Name, w)
	}
	if res.Unenforced {
		e.warn("%s: every selected PCR is unmeasured (all zeros or ones): the policy binds to this TPM alone", res.Name)
	}
	if e.json {
		e.printJSON(tpmDoc{v1, res.Name, res.UUID, nonNil(res.Added), nonNil(res.Removed), res.Unenforced, nonNil(res.Warnings)})
		return nil
	}
	if len(res.Added) == 0 && len(res.Removed) == 0 {
		e.printf("%s: nothing to do (every TPM keyslot's PCRs still match)\n", res.Name)
	}
	for _, a := range res.Added {
		e.printf("%s: %s TPM keyslot %d (%s PCRs %s, PIN %v)\n", res.Name, verb, a.Keyslot, a.Bank, formatPCRs(a.PCRs), a.PIN)
	}
	if len(res.Removed) > 0 {
		e.printf("%s: removed TPM keyslot(s) %v\n", res.Name, res.Removed)
	}
	return nil
}

// parsePCRs reads systemd's PCR list syntax: "7+11" (commas too); ""
// is no PCRs.
func parsePCRs(s string) ([]int, error) {
	out := []int{}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == '+' || r == ',' }) {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 23 {
			return nil, usagef("", fmt.Sprintf("--pcrs %q: want PCR numbers 0 to 23 joined by +, such as 7+11", s))
		}
		out = append(out, n)
	}
	return out, nil
}

func formatPCRs(pcrs []int) string {
	if len(pcrs) == 0 {
		return "none"
	}
	parts := make([]string, len(pcrs))
	for i, p := range pcrs {
		parts[i] = strconv.Itoa(p)
	}
	return strings.Join(parts, "+")
}

// tpmLine is status's description of a TPM keyslot.
func tpmLine(t volume.TPMKeyslot) string {
	pin := "no PIN"
	if t.PIN {
		pin = "PIN"
	}
	match := "PCRs not checked: " + t.Error
	if t.PCRsMatch != nil {
		match = "today's PCRs match"
		if !*t.PCRsMatch {
			match = "PCRs changed: run atrest tpm reseal"
		}
	}
	return fmt.Sprintf("%s PCRs %s, %s, %s", t.Bank, formatPCRs(t.PCRs), pin, match)
}
