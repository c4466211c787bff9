package cli

import (
	"runtime"

	"github.com/atrest/atrest/internal/version"
	ucli "github.com/urfave/cli/v2"
)

func versionCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(*ucli.Context) error {
			if e.json {
				e.printJSON(versionJSON())
				return nil
			}
			e.printf("atrest %s (%s)\n", version.Version, runtime.Version())
			return nil
		},
	}
}
