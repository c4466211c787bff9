package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

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
// document is the whole output). String and error arguments are escaped
// whole (newlines and tabs too): they may come from a header.
func (e *env) printf(format string, args ...any) {
	if !e.json {
		fmt.Fprintf(e.stdout, format, escapeArgs(args)...)
	}
}

// Escaping. Names, labels, key names and error texts can come from a
// header or a KMS, that is from whoever wrote the disk; written raw they
// could move the cursor, recolour or clear the terminal, or forge lines.
// escapeText is the one escaping function of the CLI: Main wraps stdout
// and stderr in an escapingWriter built on it, so every text printer goes
// through it, and printf and warn also escape their arguments whole.

// escapeText returns s with every control character (C0, DEL, C1), every
// bidirectional-override character and every byte that is not UTF-8
// escaped, except the runes in keep (the layout the printers themselves
// write). Escapes are \n, \t, \r, \uXXXX (which also reads the same inside
// a JSON string) and \xNN for a byte that is not UTF-8.
func escapeText(s, keep string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case !escaped(r, n, keep):
			b.WriteString(s[i : i+n])
		case n == 1 && r == utf8.RuneError:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += n
	}
	return b.String()
}

// escaped reports whether escapeText changes the rune r of n bytes.
func escaped(r rune, n int, keep string) bool {
	if r == utf8.RuneError && n == 1 {
		return true
	}
	return (unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)) && !strings.ContainsRune(keep, r)
}

// escapingWriter passes what is written through escapeText. What needs no
// escaping (nearly everything, a shown recovery key included) is written
// as given, without a copy.
type escapingWriter struct {
	w    io.Writer
	keep string
}

func (x escapingWriter) Write(p []byte) (int, error) {
	clean := true
	for i := 0; i < len(p) && clean; {
		r, n := utf8.DecodeRune(p[i:])
		clean = !escaped(r, n, x.keep)
		i += n
	}
	if clean {
		return x.w.Write(p)
	}
	if _, err := io.WriteString(x.w, escapeText(string(p), x.keep)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// escapeStreams wraps stdout and stderr: both keep newlines and tabs, and
// stderr also carriage returns (the progress line rewrites itself).
func escapeStreams(stdout, stderr io.Writer) (io.Writer, io.Writer) {
	return escapingWriter{stdout, "\n\t"}, escapingWriter{stderr, "\n\t\r"}
}

// escapeArgs escapes the text arguments of a format call whole.
func escapeArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			out[i] = escapeText(v, "")
		case error:
			out[i] = escapeText(v.Error(), "")
		default:
			out[i] = a
		}
	}
	return out
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
	var start time.Time
	var from int64
	return func(p overwrite.Progress) {
		if p.Total <= 0 {
			return
		}
		pct := int(p.Done * 100 / p.Total)
		if tty {
			// The first report is the baseline of the rate (a resumed
			// run starts part-way).
			if start.IsZero() {
				start, from = time.Now(), p.Done
			}
			fmt.Fprintf(e.stderr, "\r%s", progressLine(what, p.Done, p.Total, p.Done-from, time.Since(start)))
			if pct == 100 {
				fmt.Fprintln(e.stderr)
			}
		} else if pct/25 != last/25 || (pct == 100 && last != 100) {
			fmt.Fprintf(e.stderr, "%s: %d%%\n", what, pct)
		}
		last = pct
	}
}

// progressLine is the terminal's progress line: a bar, the percentage,
// and once some bytes moved, the rate and the time left at that rate
// (moved bytes in elapsed).
func progressLine(what string, done, total, moved int64, elapsed time.Duration) string {
	const width = 30
	pct := int(done * 100 / total)
	filled := int(done * width / total)
	line := fmt.Sprintf("%s: [%s%s] %3d%%", what, strings.Repeat("#", filled), strings.Repeat("-", width-filled), pct)
	if moved <= 0 || elapsed <= 0 {
		return line + "                         "
	}
	rate := float64(moved) / elapsed.Seconds()
	left := time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second)
	return line + fmt.Sprintf("  %6.0f MB/s  ETA %-9s", rate/1e6, left)
}

func isTerminal(w io.Writer) bool {
	if x, ok := w.(escapingWriter); ok {
		w = x.w
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
