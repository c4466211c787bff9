package cli

import (
	"fmt"
	"strings"

	ucli "github.com/urfave/cli/v2"
)

// The manual page is written here, not by urfave/cli's ToMan: that one
// renders Markdown through go-md2man and blackfriday, whose package
// initialisation (regular expressions, entity tables) every run of
// atrest would pay, about 0.4-0.9 ms of a 10 ms unlock. Release builds
// use the urfave_cli_no_docs tag (Makefile), which leaves urfave/cli's
// Markdown and roff generators, and with them both packages, out.

func manCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:   "man",
		Usage:  "print the manual page (roff), generated from the same definitions as --help",
		Hidden: true,
		Action: func(c *ucli.Context) error {
			fmt.Fprint(e.stdout, manPage(c.App))
			return nil
		},
	}
}

// manPage is the roff source of atrest(8): the commands, their flags and
// descriptions as --help shows them, and the exit codes once.
func manPage(app *ucli.App) string {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH ATREST 8 \"\" \"atrest %s\" \"System Administration\"\n", roff(app.Version))
	fmt.Fprintf(&b, ".SH NAME\natrest \\- %s\n", roff(app.Usage))
	b.WriteString(".SH SYNOPSIS\n.B atrest\n[GLOBAL OPTIONS] COMMAND [COMMAND OPTIONS] [ARGUMENTS...]\n")
	fmt.Fprintf(&b, ".SH DESCRIPTION\n%s", manText(withoutExitCodes(app.Description)))
	b.WriteString(".SH GLOBAL OPTIONS\n")
	manFlags(&b, app.VisibleFlags())
	b.WriteString(".SH COMMANDS\n")
	for _, c := range app.VisibleCommands() {
		manCommandSection(&b, c, "")
	}
	b.WriteString(".SH EXIT CODES\n")
	for _, c := range ExitCodes {
		fmt.Fprintf(&b, ".TP\n.B %d\n%s\n", c.Code, roff(c.Text))
	}
	return b.String()
}

func manCommandSection(b *strings.Builder, c *ucli.Command, parent string) {
	name := strings.TrimSpace(parent + " " + c.Name)
	fmt.Fprintf(b, ".SS \"%s\"\n", roff(strings.TrimSpace(name+" "+c.ArgsUsage)))
	fmt.Fprintf(b, "%s\n", roff(c.Usage))
	if d := withoutExitCodes(c.Description); d != "" {
		b.WriteString(".PP\n")
		b.WriteString(manText(d))
	}
	manFlags(b, c.VisibleFlags())
	for _, sub := range c.VisibleCommands() {
		manCommandSection(b, sub, name)
	}
}

// manFlags lists flags as tagged paragraphs: names, a value placeholder
// when the flag takes one, the usage and the default.
func manFlags(b *strings.Builder, flags []ucli.Flag) {
	for _, f := range flags {
		names := make([]string, 0, 2)
		for _, n := range f.Names() {
			if len(n) == 1 {
				names = append(names, "\\-"+n)
			} else {
				names = append(names, "\\-\\-"+roff(n))
			}
		}
		tag := "\\fB" + strings.Join(names, ", ") + "\\fR"
		usage := ""
		if d, ok := f.(ucli.DocGenerationFlag); ok {
			if d.TakesValue() {
				tag += " \\fIVALUE\\fR"
			}
			usage = placeholders(roff(d.GetUsage()))
			// A switch's default is off, not worth a word.
			if def := d.GetDefaultText(); d.TakesValue() && def != "" {
				usage += " (default: " + roff(def) + ")"
			} else if v := d.GetValue(); d.TakesValue() && v != "" && v != `""` {
				usage += " (default: " + roff(v) + ")"
			}
		}
		fmt.Fprintf(b, ".TP\n%s\n%s\n", tag, usage)
	}
}

// manText sets a description: paragraphs as text, indented lines
// (examples, lists) as they are.
func manText(s string) string {
	var b strings.Builder
	for i, para := range strings.Split(strings.TrimSpace(s), "\n\n") {
		if i > 0 {
			b.WriteString(".PP\n")
		}
		if strings.Contains(para, "\n ") || strings.HasPrefix(para, " ") {
			fmt.Fprintf(&b, ".nf\n%s\n.fi\n", roffLines(para))
		} else {
			fmt.Fprintf(&b, "%s\n", roffLines(para))
		}
	}
	return b.String()
}

// withoutExitCodes drops the exit code table the commands' --help ends
// with: the page lists the codes once.
func withoutExitCodes(s string) string {
	s, _ = strings.CutSuffix(strings.TrimRight(s, "\n"), strings.TrimRight(exitCodeHelp(), "\n"))
	return strings.TrimSpace(s)
}

// roff escapes text for one line of roff.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "\n", " ")
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// placeholders sets urfave/cli's `PLACEHOLDER`s of a usage in bold.
func placeholders(s string) string {
	parts := strings.Split(s, "`")
	if len(parts)%2 == 0 { // an odd backtick: leave it
		return s
	}
	for i := 1; i < len(parts); i += 2 {
		parts[i] = "\\fB" + parts[i] + "\\fR"
	}
	return strings.Join(parts, "")
}

// roffLines escapes every line of s.
func roffLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = roff(l)
	}
	return strings.Join(lines, "\n")
}
