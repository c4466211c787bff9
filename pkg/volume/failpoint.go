//go:build atrest_failpoints

package volume

import (
	"os"
	"strings"
)

// failpoint ends the process at the named point when ATREST_FAILPOINT
// names it, as a crash would (points: "<op>-after-journal", "<op>-after-add",
// "<op>-after-verify", "<op>-after-remove", "<op>-after-clear"). Only binaries built with the atrest_failpoints tag
// (the CLI tests' build) contain this; release builds have failpoint_off.go.
var failpoint = func(name string) {
	for _, want := range strings.Split(os.Getenv("ATREST_FAILPOINT"), ",") {
		if want == name {
			os.Exit(137)
		}
	}
}
