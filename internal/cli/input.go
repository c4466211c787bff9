package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/atrest/atrest/pkg/secret"
	ucli "github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// maxSecret bounds a passphrase or key file (cryptsetup's default key file
// limit is 8 MiB; real ones are far smaller).
const maxSecret = 1 << 20

var keyFileFlag = &ucli.StringFlag{
	Name: "key-file", Aliases: []string{"k"}, TakesFile: true,
	Usage: "read the key from `FILE` (\"-\" for standard input), byte for byte as cryptsetup does; without it, the key is asked for on the terminal, or read as one line from standard input",
}

// readSecret obtains a passphrase or recovery key the ways cryptsetup
// does, never from argv or the environment: --key-file (verbatim), the
// terminal without echo, or one line of standard input.
func (e *env) readSecret(c *ucli.Context, prompt string) (*secret.Key, error) {
	return e.readSecretFlag(c, "key-file", prompt, false)
}

// readSecretFlag is readSecret with the file named by flag; trim drops
// one trailing newline of the file (a PIN file written with echo).
func (e *env) readSecretFlag(c *ucli.Context, flag, prompt string, trim bool) (*secret.Key, error) {
	if path := c.String(flag); path != "" {
		var r io.Reader = e.stdin
		if path != "-" {
			f, err := os.Open(path)
			if err != nil {
				return nil, fmt.Errorf("key file: %w", err)
			}
			defer f.Close()
			r = f
		}
		return secret.Read(r, maxSecret, trim)
	}
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(e.stderr, prompt+": ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return nil, fmt.Errorf("read from terminal: %w", err)
		}
		if len(b) == 0 {
			return nil, usagef("", "nothing entered")
		}
		return secret.FromBytes(b)
	}
	k, err := secret.Read(&lineReader{r: e.stdin}, maxSecret, true)
	if err != nil {
		return nil, fmt.Errorf("read %s from standard input: %w", prompt, err)
	}
	return k, nil
}

// lineReader ends at the first newline (kept, so secret.Read trims it):
// one line of standard input is one passphrase. It reads byte by byte, so
// no buffer on the heap holds the passphrase, and nothing after the line
// is consumed.
type lineReader struct {
	r    io.Reader
	done bool
	one  [1]byte
}

func (l *lineReader) Read(p []byte) (int, error) {
	if l.done {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) {
		m, err := l.r.Read(l.one[:])
		b := l.one[0]
		l.one[0] = 0
		if m == 0 && err == nil {
			continue
		}
		if errors.Is(err, io.EOF) && m == 0 {
			l.done = true
			if n == 0 {
				return 0, io.EOF
			}
			return n, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return n, err
		}
		p[n] = b
		n++
		if b == '\n' {
			l.done = true
			return n, nil
		}
	}
	return n, nil
}
