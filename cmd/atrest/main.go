// Command atrest is the command line of atrest, encryption at rest for
// Linux nodes. Everything it does lives in internal/cli and pkg/volume.
package main

import (
	"os"

	"github.com/atrest/atrest/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args, os.Stdin, os.Stdout, os.Stderr))
}
