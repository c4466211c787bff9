// Package cli is the atrest command line. Each command lives in its own
// file and is a thin layer over the use cases in pkg/volume: it parses
// flags, reads secrets from the terminal or standard input (never argv or
// the environment), calls one use case and prints the result as text or
// JSON (-o json). errors.go maps every error to a documented exit code and
// a hint; nothing else decides exit codes.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/atrest/atrest/internal/logging"
	"github.com/atrest/atrest/internal/version"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms/backends"
	"github.com/atrest/atrest/pkg/volume"
	ucli "github.com/urfave/cli/v2"
)

// env is what every command shares: the I/O streams, the output format and
// the lazily built configuration and Manager.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	json           bool
	configPath     string
	mgr            *volume.Manager
	set            *backends.Set
}

// Main runs atrest with args and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	stdout, stderr = escapeStreams(stdout, stderr)
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	app := newApp(e)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := app.RunContext(ctx, interspersed(app, args))
	if e.set != nil {
		_ = e.set.Close()
	}
	if err == nil {
		return ExitOK
	}
	if code, ok := err.(exitCode); ok {
		return int(code)
	}
	return e.fail(err)
}

// exitCode lets a command end with a code that is not an error (status's
// "needs attention").
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit %d", int(c)) }

// fail prints err the one way atrest prints errors and returns its code.
func (e *env) fail(err error) int {
	c := classify(err)
	if e.json {
		e.printJSON(errorDoc{v1, errorBody{Message: err.Error(), Kind: c.kind, ExitCode: c.code, Hint: c.hint}})
	}
	e.printErr(err)
	return c.code
}

// printErr prints err and its hint on stderr.
func (e *env) printErr(err error) {
	fmt.Fprintf(e.stderr, "atrest: error: %v\n", err)
	if h := classify(err).hint; h != "" {
		fmt.Fprintf(e.stderr, "hint: %s\n", h)
	}
}

func newApp(e *env) *ucli.App {
	app := &ucli.App{
		Name:    "atrest",
		Usage:   "encryption at rest for Linux nodes: LUKS2 volumes whose keys a KMS protects",
		Version: version.Version,
		Description: "atrest formats local disks as LUKS2 volumes (aes-xts-plain64, 512-bit keys), " +
			"wraps each volume's platform secret with a key held in a KMS (Vault Transit, Vault KV " +
			"or a local keystore), opens them without a human, and rotates and recovers keys.\n\n" +
			"Configuration: " + config.DefaultPath + " (docs/config.md). Secrets are read from the " +
			"terminal or standard input, never from arguments or the environment.\n\n" + exitCodeHelp(),
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: config.DefaultPath, EnvVars: []string{"ATREST_CONFIG"},
				Usage: "configuration file", TakesFile: true},
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "output format: text or json"},
		},
		Before: func(c *ucli.Context) error {
			switch c.String("output") {
			case "text":
			case "json":
				e.json = true
			default:
				return usagef("use -o text or -o json", fmt.Sprintf("unknown output format %q", c.String("output")))
			}
			e.configPath = c.String("config")
			return nil
		},
		Commands: []*ucli.Command{
			formatCommand(e), openCommand(e), closeCommand(e), statusCommand(e),
			rekeyCommand(e), rewrapCommand(e), policyCommand(e), reencryptCommand(e), encryptCommand(e), recoveryCommand(e), headerCommand(e),
			eraseCommand(e), adoptCommand(e), kmsCommand(e), tpmCommand(e), versionCommand(e),
			completionCommand(e), manCommand(e),
		},
		Writer:    e.stdout,
		ErrWriter: e.stderr,
		Reader:    e.stdin,
		// Errors are printed by Main, once, with their exit codes.
		ExitErrHandler: func(*ucli.Context, error) {},
		OnUsageError: func(_ *ucli.Context, err error, _ bool) error {
			return usagef("see atrest --help", err.Error())
		},
	}
	for _, cmd := range app.Commands {
		cmd.OnUsageError = app.OnUsageError
		for _, sub := range cmd.Subcommands {
			sub.OnUsageError = app.OnUsageError
		}
	}
	return app
}

// manager loads the configuration and builds the Manager on first use, so
// that commands like version need neither.
func (e *env) manager() (*volume.Manager, error) {
	if e.mgr != nil {
		return e.mgr, nil
	}
	cfg, err := config.Load(e.configPath)
	if err != nil {
		return nil, err
	}
	set, err := backends.Open(cfg, os.Getenv)
	if err != nil {
		return nil, err
	}
	e.set = set
	e.mgr = volume.New(cfg, set, volume.WithLogger(logging.Audit(cfg.StateDir, e.stderr)))
	return e.mgr, nil
}

// warmKMS starts the connection to Vault, when the configuration uses
// it, for a command that will ask it once it has found its volumes: the
// TLS handshake then overlaps the scan (backends.Set.Warm). A
// configuration that does not load is reported by the command itself.
func (e *env) warmKMS() {
	if m, err := e.manager(); err == nil {
		m.KMS().Warm()
	}
}

// find resolves refs (names, devices, UUIDs) or, with all, every atrest
// volume; the devices are scanned at most once for all the refs.
func (e *env) find(ctx context.Context, refs []string, all bool) ([]*volume.Volume, error) {
	m, err := e.manager()
	if err != nil {
		return nil, err
	}
	if all {
		if len(refs) > 0 {
			return nil, usagef("name volumes or use --all, not both", "both volumes and --all given")
		}
		vols, errs := m.Managed(ctx)
		for _, err := range errs {
			e.warn("%v", err)
		}
		if len(vols) == 0 {
			return nil, fmt.Errorf("%w: no atrest volumes on this machine", volume.ErrNotFound)
		}
		return vols, nil
	}
	if len(refs) == 0 {
		return nil, usagef("name a volume (NAME, DEVICE or UUID) or use --all", "no volume given")
	}
	if err := checkRefs(refs...); err != nil {
		return nil, err
	}
	var vols []*volume.Volume
	f := m.Finder()
	for _, r := range refs {
		v, err := f.Find(ctx, r)
		if err != nil {
			return nil, err
		}
		vols = append(vols, v)
	}
	return vols, nil
}

// one resolves exactly one volume argument.
func (e *env) one(c *ucli.Context) (*volume.Volume, error) {
	if c.NArg() != 1 {
		return nil, usagef("usage: atrest "+c.Command.Name+" "+c.Command.ArgsUsage, "expected exactly one volume")
	}
	if err := checkRefs(c.Args().First()); err != nil {
		return nil, err
	}
	m, err := e.manager()
	if err != nil {
		return nil, err
	}
	return m.Find(c.Context, c.Args().First())
}

// checkRefs refuses blank volume references before anything looks them
// up: "" or "  " names no volume, whatever the shell made of a variable.
func checkRefs(refs ...string) error {
	for _, r := range refs {
		if strings.TrimSpace(r) == "" {
			return usagef("name a volume: NAME, DEVICE or UUID", "empty volume argument")
		}
	}
	return nil
}

// warn prints a warning line on stderr.
func (e *env) warn(format string, args ...any) {
	fmt.Fprintf(e.stderr, "atrest: warning: "+format+"\n", escapeArgs(args)...)
}

// exitCodeHelp renders the EXIT CODES section of --help. Every command's
// description ends with it, and newApp builds them all on every run:
// rendered once, not 20 times (about 0.15 ms of each run's start).
var exitCodeHelp = sync.OnceValue(func() string {
	var b strings.Builder
	b.WriteString("EXIT CODES:\n")
	for _, c := range ExitCodes {
		fmt.Fprintf(&b, "   %2d  %s\n", c.Code, c.Text)
	}
	return b.String()
})
