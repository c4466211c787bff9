package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/atrest/atrest/pkg/blockdev/overwrite"
	"golang.org/x/term"
)

// printJSON writes v as one indented JSON document on stdout.
func (e *env) printJSON(v any) {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// printf writes text output (suppressed in JSON mode, where the JSON
// document is the whole output).
func (e *env) printf(format string, args ...any) {
	if !e.json {
		fmt.Fprintf(e.stdout, format, args...)
	}
}

// table returns a tabwriter for aligned columns on stdout.
func (e *env) table() *tabwriter.Writer {
	return tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
}

// progress reports long operations on stderr: a rewritten line on a
// terminal, a few lines otherwise (logs stay short).
func (e *env) progress(what string) overwrite.Func {
	tty := isTerminal(e.stderr)
	last := -1
	return func(p overwrite.Progress) {
		if p.Total <= 0 {
			return
		}
		pct := int(p.Done * 100 / p.Total)
		if tty {
			if pct != last {
				fmt.Fprintf(e.stderr, "\r%s: %3d%%", what, pct)
				if pct == 100 {
					fmt.Fprintln(e.stderr)
				}
			}
		} else if pct/25 != last/25 || (pct == 100 && last != 100) {
			fmt.Fprintf(e.stderr, "%s: %d%%\n", what, pct)
		}
		last = pct
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
