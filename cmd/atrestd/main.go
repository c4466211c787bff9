// Command atrestd is atrest's systemd service: it opens atrest volumes at
// boot without a person and looks after them while the machine runs.
// Everything it does lives in pkg/daemon; systemd/atrestd.service runs it.
//
//	atrestd [-c /etc/atrest/atrest.yaml] [--log-level debug|info|warn|error] [--early]
//
// --early opens the volumes whose keys are all on the machine (TPM, local
// keystore) once and exits, non-zero if one of them did not open:
// systemd/atrest-early.service runs it before local-fs.target.
//
// SIGHUP reloads the configuration; SIGTERM stops it and leaves every
// volume open.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/atrest/atrest/internal/logging"
	"github.com/atrest/atrest/internal/version"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/daemon"
	"github.com/atrest/atrest/pkg/kms/vault"
	"github.com/atrest/atrest/pkg/secret"
)

func main() {
	if err := secret.HardenProcess(); err != nil {
		fmt.Fprintln(os.Stderr, "atrestd: error:", err)
		os.Exit(1)
	}
	tokenWarning := vault.TakeEnvToken()
	fs := flag.NewFlagSet("atrestd", flag.ContinueOnError)
	path := fs.String("c", config.DefaultPath, "configuration `file`")
	level := fs.String("log-level", "info", "least severe messages logged: debug, info, warn or error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	early := fs.Bool("early", false, "open the volumes whose keys are all local (TPM, local keystore) once and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println("atrestd", version.Version)
		return
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(*level)); err != nil || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "atrestd: error: usage: atrestd [-c FILE] [--log-level debug|info|warn|error] [--early]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	logger := logging.Daemon(os.Stderr, l)
	if tokenWarning != "" {
		logger.Warn(tokenWarning)
	}
	d := daemon.New(daemon.Options{ConfigPath: *path, Logger: logger})
	if *early {
		if err := d.RunEarly(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "atrestd: error:", err)
			os.Exit(1)
		}
		return
	}
	if err := d.Run(ctx, reload); err != nil {
		fmt.Fprintln(os.Stderr, "atrestd: error:", err)
		os.Exit(1)
	}
}
