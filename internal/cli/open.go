package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/atrest/atrest/pkg/volume"
	ucli "github.com/urfave/cli/v2"
)

func openCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:      "open",
		Usage:     "unlock volumes through the KMS and map them at /dev/mapper/NAME",
		ArgsUsage: "NAME|DEVICE|UUID... | --all",
		Description: `Unwraps each volume's platform secret with the KMS (one round trip
per key for all volumes), opens its keyslot and creates the dm-crypt
mapping /dev/mapper/NAME. A volume that is already open is a success.
When the KMS cannot open a volume (unreachable, refusing), its TPM
keyslots (atrest tpm enroll, systemd-cryptenroll --tpm2-device) are
tried, one TPM connection for all; a PIN keyslot needs --pin, --pin-file
or a terminal. The output says what opened each volume. A TPM keyslot
whose PCRs changed is sealed again when a network KMS opened the volume
and tpm.reseal is auto (docs/tpm.md).

With --test the volumes are unlocked but not mapped, as cryptsetup open
--test-passphrase does: the KMS unwraps each secret and it opens its
keyslot, the volume key checked against the header's digest; no
device-mapper is needed.

EXAMPLES:
   atrest open data1
   atrest open --test data1
   atrest open --all
   atrest -o json open /dev/nvme1n1
   atrest open data1 --pin-file /run/pin

` + exitCodeHelp(),
		Flags: []ucli.Flag{
			&ucli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "every atrest volume on this machine"},
			&ucli.BoolFlag{Name: "read-only", Usage: "map read-only"},
			&ucli.BoolFlag{Name: "test", Usage: "only check that the volumes unlock, and through what (no mapping, no device-mapper needed), as cryptsetup's --test-passphrase"},
			&ucli.BoolFlag{Name: "pin", Usage: "the PIN of TPM keyslots that need one, when the KMS cannot open a volume (asked for on the terminal, one line of standard input, or --pin-file); on a terminal it is asked for anyway when needed"},
			pinFileFlag,
		},
		Action: func(c *ucli.Context) error {
			e.warmKMS()
			vols, err := e.find(c.Context, c.Args().Slice(), c.Bool("all"))
			if err != nil {
				return err
			}
			m, _ := e.manager()
			pin := e.pinFunc(c)
			defer pin.wipe()
			res := m.Open(c.Context, vols, volume.OpenOptions{ReadOnly: c.Bool("read-only"), Test: c.Bool("test"), PIN: pin.get})
			var errs []error
			out := volumesDoc[openResult]{v1, []openResult{}}
			for i, r := range res {
				o := openResult{Name: r.Name, UUID: r.UUID, Device: r.Device, Mapper: r.Mapper, AlreadyOpen: r.AlreadyOpen, By: nonNil(r.By), Resealed: []volume.TPMKeyslot{}, failed: failure(r.Err)}
				if c.Bool("test") {
					o.Mapper = ""
				}
				switch {
				case r.Err != nil:
					errs = append(errs, fmt.Errorf("%s: %w", r.Name, r.Err))
				case r.AlreadyOpen:
					e.printf("%s: already open at %s\n", r.Name, r.Mapper)
				case c.Bool("test"):
					e.printf("%s: unlocks (by %s); not mapped (--test)\n", r.Name, strings.Join(r.By, "+"))
				default:
					e.printf("%s: opened at %s (by %s)\n", r.Name, r.Mapper, strings.Join(r.By, "+"))
				}
				if r.Err == nil && !r.AlreadyOpen {
					o.Resealed, o.ResealedPolicy = e.resealAfterOpen(c, m, vols[i], r.By)
				}
				out.Volumes = append(out.Volumes, o)
			}
			if e.json {
				e.printJSON(out)
			}
			return joinVolumeErrors(e, errs)
		},
	}
}

func closeCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:      "close",
		Usage:     "remove the mappings of volumes",
		ArgsUsage: "NAME... | --all",
		Description: `Removes /dev/mapper/NAME. A mounted (or otherwise used) mapping is
refused and keeps working; a volume that is not open is a success.

EXAMPLES:
   atrest close data1
   atrest close --all

` + exitCodeHelp(),
		Flags: []ucli.Flag{
			&ucli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "every open atrest volume"},
		},
		Action: func(c *ucli.Context) error {
			names := c.Args().Slice()
			uuids := map[string]string{}
			if c.Bool("all") {
				vols, err := e.find(c.Context, names, true)
				if err != nil {
					return err
				}
				names = names[:0]
				for _, v := range vols {
					names = append(names, v.Name)
					uuids[v.Name] = v.UUID()
				}
			} else if len(names) == 0 {
				return usagef("usage: atrest close NAME... or --all", "no volume given")
			} else if err := checkRefs(names...); err != nil {
				return err
			}
			m, err := e.manager()
			if err != nil {
				return err
			}
			var errs []error
			out := volumesDoc[closeResult]{v1, []closeResult{}}
			finder := m.Finder()
			for _, name := range names {
				uuid := uuids[name]
				if uuid == "" {
					uuid = closeUUID(c.Context, m, finder, name)
				}
				closed, err := m.Close(c.Context, name)
				out.Volumes = append(out.Volumes, closeResult{name, uuid, closed, failure(err)})
				switch {
				case err != nil:
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
				case closed:
					e.printf("%s: closed\n", name)
				default:
					e.printf("%s: not open\n", name)
				}
			}
			if e.json {
				e.printJSON(out)
			}
			return joinVolumeErrors(e, errs)
		},
	}
}

// closeUUID is the UUID of the volume mapped or known as name: from the
// mapping, else from the volume the name finds ("" when neither knows it:
// close of an unknown name is still "not open").
func closeUUID(ctx context.Context, m *volume.Manager, f *volume.Finder, name string) string {
	if uuid := m.MappingUUID(name); uuid != "" {
		return uuid
	}
	if v, err := f.Find(ctx, name); err == nil {
		return v.UUID()
	}
	return ""
}

// joinVolumeErrors ends a multi-volume command whose output (text lines
// or the JSON document) already covers every volume: each failure is
// printed on stderr, and the exit code is the failures' common code, or
// the generic error code when they differ.
func joinVolumeErrors(e *env, errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	code := classify(errs[0]).code
	for _, err := range errs {
		if classify(err).code != code {
			code = ExitError
		}
		e.printErr(err)
	}
	return exitCode(code)
}
