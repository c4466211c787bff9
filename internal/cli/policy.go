package cli

import (
	"fmt"
	"strings"

	"github.com/atrest/atrest/pkg/policy"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/volume"
	ucli "github.com/urfave/cli/v2"
)

type policySetResult struct {
	Name      string       `json:"name"`
	UUID      string       `json:"uuid"`
	From      *volume.Keys `json:"from,omitempty"`
	To        *volume.Keys `json:"to,omitempty"`
	Unchanged bool         `json:"unchanged"`
	Resumed   string       `json:"resumed,omitempty"`
	Warnings  []string     `json:"warnings"`
	failed
}

func policyCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:  "policy",
		Usage: "change the unlock policy of volumes (docs/policy.md)",
		Subcommands: []*ucli.Command{{
			Name:      "set",
			Usage:     "move volumes to another unlock policy, crash-safely",
			ArgsUsage: "NAME|DEVICE|UUID POLICY | --all POLICY | (NAME...|--all) --from-config|--none|--resume [--recovery-key [--key-file F]]",
			Description: `POLICY is written as the configuration's policy: is, e.g. 'any: [tpm, vault]',
'all: [tpm, vault]', 'threshold: {k: 2, of: [tpm, vault, kmip]}',
'any: [{all: [tpm, vault]}, kmip]' or a bare factor such as vault. Every
factor it names must be configured. --from-config applies the policy the
configuration names for each volume (its volumes[].policy, else the fleet
policy:, else none); --none moves the volumes back to the kms: backend alone.

The change runs like a rekey: the new keyslots and token are added and each
keyslot is opened through every share of its branch, then the old platform
keyslots and token are removed. The volume key, the data and the recovery
keyslots do not change. An interruption at any step leaves the old or the
new policy opening the volume; status says so, and policy set --resume (or
running the same policy set again) finishes it. The old policy must still
be satisfied and every factor of the new one must answer: otherwise the
error names the factor and nothing is changed. When the old policy's
factors cannot satisfy it any more (all: [tpm, vault] after a PCR change),
--recovery-key opens the volume with its recovery key instead.

A later atrest rekey moves a volume to the policy the configuration names:
put the policy into the configuration to keep it (policy set warns when
they differ).

EXAMPLES:
   atrest policy set data1 'any: [tpm, vault]'
   atrest policy set --all 'all: [tpm, vault]'
   atrest policy set --all --from-config
   atrest policy set data1 --none
   atrest policy set data1 --resume
   atrest policy set data1 'any: [tpm, vault]' --recovery-key --key-file - < data1.recovery

` + exitCodeHelp(),
			Flags: []ucli.Flag{
				&ucli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "every atrest volume"},
				&ucli.BoolFlag{Name: "from-config", Usage: "the policy the configuration names for each volume"},
				&ucli.BoolFlag{Name: "none", Usage: "no policy: the kms: backend alone"},
				&ucli.BoolFlag{Name: "resume", Usage: "only finish (or undo) an interrupted change"},
				&ucli.BoolFlag{Name: "recovery-key", Usage: "open the volume with its recovery key (asked for like recovery unlock, or --key-file) instead of the old policy, whose factors no longer satisfy it; one volume"},
				keyFileFlag,
			},
			Action: e.policySet,
		}},
	}
}

func (e *env) policySet(c *ucli.Context) error {
	args := c.Args().Slice()
	modes := 0
	for _, f := range []string{"from-config", "none", "resume"} {
		if c.Bool(f) {
			modes++
		}
	}
	const usage = "usage: atrest policy set NAME POLICY, --all POLICY, or NAME...|--all with --from-config, --none or --resume"
	var given *policy.Policy
	text := ""
	switch {
	case modes > 1:
		return usagef(usage, "--from-config, --none and --resume exclude each other")
	case modes == 0 && len(args) == 0:
		return usagef(usage, "no policy given")
	case modes == 0 && !c.Bool("all") && len(args) != 2:
		return usagef(usage, fmt.Sprintf("want a volume and a policy, got %d arguments (quote the policy: 'any: [tpm, vault]')", len(args)))
	case modes == 0:
		text, args = args[len(args)-1], args[:len(args)-1]
	}
	m, err := e.manager()
	if err != nil {
		return err
	}
	if modes == 0 && text == "none" {
		return usagef("atrest policy set NAME --none moves a volume back to the kms: backend alone", `"none" is not a policy`)
	}
	if modes == 0 {
		p, err := policy.Parse(text)
		if err == nil {
			err = m.Config().CheckPolicy(p)
		}
		if err != nil {
			return usagef("write the policy as the configuration does (docs/policy.md), e.g. 'any: [tpm, vault]'",
				fmt.Sprintf("policy %q: %v", text, err))
		}
		given = p
	}
	switch {
	case c.IsSet("key-file") && !c.Bool("recovery-key"):
		return usagef(usage, "--key-file goes with --recovery-key")
	case c.Bool("recovery-key") && (len(args) != 1 || c.Bool("all") || c.Bool("resume")):
		return usagef("a recovery key opens one volume: name it", "--recovery-key with more than one volume, --all or --resume")
	}
	vols, err := e.find(c.Context, args, c.Bool("all"))
	if err != nil {
		return err
	}
	var key *secret.Key
	if c.Bool("recovery-key") {
		if key, err = e.readSecret(c, "recovery key for "+vols[0].Device); err != nil {
			return err
		}
		defer key.Wipe()
	}
	var errs []error
	out := volumesDoc[policySetResult]{v1, []policySetResult{}}
	for _, v := range vols {
		p := given
		if c.Bool("from-config") {
			p = m.Config().PolicyFor(v.Name)
		}
		res, err := m.SetPolicy(c.Context, v, volume.PolicySetOptions{Policy: p, Resume: c.Bool("resume"), Key: key})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", v.Name, err))
			out.Volumes = append(out.Volumes, policySetResult{Name: v.Name, UUID: v.UUID(), Warnings: []string{}, failed: failure(err)})
			continue
		}
		var warnings []string
		if !c.Bool("resume") {
			if want := m.Config().PolicyFor(res.Name); want.String() != p.String() {
				warnings = append(warnings, fmt.Sprintf("the configuration names %s for %s: a later atrest rekey moves it there; put the policy into the configuration (volumes[].policy) to keep it",
					policyOrNone(want.String()), res.Name))
			}
		}
		warnings = append(res.Warnings, warnings...)
		for _, w := range warnings {
			e.warn("%s: %s", res.Name, w)
		}
		out.Volumes = append(out.Volumes, policySetResult{res.Name, res.UUID, &res.From, &res.To, res.Unchanged, res.Resumed, nonNil(warnings), failed{}})
		if res.Resumed != "" {
			e.printf("%s: found an interrupted change and %s it\n", res.Name, res.Resumed)
		}
		switch {
		case c.Bool("resume") && res.Resumed == "":
			e.printf("%s: nothing to resume; %s\n", res.Name, keysLine(res.To))
		case c.Bool("resume"):
			e.printf("%s: %s\n", res.Name, keysLine(res.To))
		case res.Unchanged:
			e.printf("%s: already %s\n", res.Name, keysLine(res.To))
		default:
			e.printf("%s: %s -> %s\n", res.Name, keysLine(res.From), keysLine(res.To))
		}
	}
	if e.json {
		e.printJSON(out)
	}
	return joinVolumeErrors(e, errs)
}

// keysLine says what protects a volume: "policy any(tpm,vault) (keyslots
// 1, 2)" or "kms local, no policy (keyslot 0)".
func keysLine(k volume.Keys) string {
	slots := make([]string, len(k.Keyslots))
	for i, s := range k.Keyslots {
		slots[i] = fmt.Sprint(s)
	}
	what := "keyslot"
	if len(slots) > 1 {
		what = "keyslots"
	}
	if k.Policy != "" {
		return fmt.Sprintf("policy %s (%s %s)", k.Policy, what, strings.Join(slots, ", "))
	}
	return fmt.Sprintf("kms %s, no policy (%s %s)", k.KMS, what, strings.Join(slots, ", "))
}

func policyOrNone(expr string) string {
	if expr == "" {
		return "no policy (the kms: backend alone)"
	}
	return "policy " + expr
}
