package cli

import (
	"strings"

	ucli "github.com/urfave/cli/v2"
)

// interspersed reorders args so that flags may follow positional
// arguments (`atrest format /dev/sdb --name data1`, as every example in the
// design and docs writes it). urfave/cli v2 stops parsing flags at the
// first positional argument; this moves each flag (and its value) to the
// command level that defines it, the global options (-o, -c) included,
// ahead of the positional arguments. "--" ends flag handling.
func interspersed(app *ucli.App, args []string) []string {
	type level struct {
		name  string
		flags []ucli.Flag
		toks  []string
	}
	levels := []*level{{flags: app.Flags}}
	cmds := app.Commands
	var positional, trailer []string
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			positional = append(positional, args[i:]...)
			i = len(args)
		case a == "--generate-bash-completion":
			trailer = append(trailer, a)
		case strings.HasPrefix(a, "-") && a != "-":
			name := strings.TrimLeft(a, "-")
			name, _, hasValue := strings.Cut(name, "=")
			at := levels[len(levels)-1]
			var def ucli.Flag
			for j := len(levels) - 1; j >= 0 && def == nil; j-- {
				if f := lookupFlag(levels[j].flags, name); f != nil {
					def, at = f, levels[j]
				}
			}
			at.toks = append(at.toks, a)
			if def != nil && !hasValue && takesValue(def) && i+1 < len(args) {
				i++
				at.toks = append(at.toks, args[i])
			}
		default:
			if len(positional) == 0 {
				if cmd := lookupCommand(cmds, a); cmd != nil {
					levels = append(levels, &level{name: a, flags: cmd.Flags})
					cmds = cmd.Subcommands
					continue
				}
			}
			positional = append(positional, a)
		}
	}
	out := []string{args[0]}
	for i, l := range levels {
		if i > 0 {
			out = append(out, l.name)
		}
		out = append(out, l.toks...)
	}
	out = append(out, positional...)
	return append(out, trailer...)
}

func lookupFlag(flags []ucli.Flag, name string) ucli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

func lookupCommand(cmds []*ucli.Command, name string) *ucli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

func takesValue(f ucli.Flag) bool {
	if v, ok := f.(interface{ TakesValue() bool }); ok {
		return v.TakesValue()
	}
	return false
}
