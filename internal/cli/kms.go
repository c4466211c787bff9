package cli

import (
	"errors"
	"fmt"

	ucli "github.com/urfave/cli/v2"
)

func kmsCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:  "kms",
		Usage: "diagnose the configured KMS",
		Subcommands: []*ucli.Command{{
			Name:  "check",
			Usage: "check reachability, authentication, permissions and a probe round trip",
			Description: `Runs every check of the configured backends and reports each step. The
exit code is that of the first failed step (9 unreachable, 10 denied, 11
key missing, 12 configuration).

EXAMPLES:
   atrest kms check
   atrest -o json kms check

` + exitCodeHelp(),
			Action: func(c *ucli.Context) error {
				m, err := e.manager()
				if err != nil {
					return err
				}
				steps, err := m.KMSCheck(c.Context)
				if err != nil {
					return err
				}
				var failed error
				out := make([]map[string]any, 0, len(steps))
				w := e.table()
				for _, s := range steps {
					j := map[string]any{"name": s.Name, "detail": s.Detail, "ok": s.Err == nil}
					status := "ok"
					if s.Err != nil {
						status = "FAILED: " + s.Err.Error()
						j["error"] = s.Err.Error()
						if failed == nil {
							failed = fmt.Errorf("kms check %s: %w", s.Name, s.Err)
						}
					}
					out = append(out, j)
					if !e.json {
						fmt.Fprintf(w, "%s\t%s\t%s\n", s.Name, status, s.Detail)
					}
				}
				w.Flush()
				if e.json {
					e.printJSON(map[string]any{"ok": failed == nil, "steps": out})
					if failed != nil {
						e.printErr(failed)
						return exitCode(classify(failed).code)
					}
				}
				if failed == nil && len(steps) == 0 {
					return errors.New("no KMS check ran")
				}
				return failed
			},
		}},
	}
}
