// Command atrest is the command line of atrest, encryption at rest for
// Linux nodes. Everything it does lives in internal/cli and pkg/volume.
package main

import (
	"fmt"
	"os"

	"github.com/atrest/atrest/internal/cli"
	"github.com/atrest/atrest/pkg/kms/vault"
	"github.com/atrest/atrest/pkg/secret"
)

func main() {
	if err := secret.HardenProcess(); err != nil {
		fmt.Fprintln(os.Stderr, "atrest: error:", err)
		os.Exit(1)
	}
	if warning := vault.TakeEnvToken(); warning != "" {
		fmt.Fprintln(os.Stderr, "atrest: warning:", warning)
	}
	os.Exit(cli.Main(os.Args, os.Stdin, os.Stdout, os.Stderr))
}
