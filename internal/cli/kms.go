package cli

import (
	"errors"
	"fmt"

	"github.com/atrest/atrest/pkg/kms"
	ucli "github.com/urfave/cli/v2"
)

func kmsCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:  "kms",
		Usage: "diagnose the configured KMS",
		Subcommands: []*ucli.Command{kmsRotateCommand(e), kmsRetireCommand(e), {
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
				doc := kmsCheckDoc{schema: v1, Steps: []stepDoc{}}
				w := e.table()
				for _, s := range steps {
					j := stepDoc{Name: s.Name, Detail: s.Detail, OK: s.Err == nil}
					status := "ok"
					if s.Err != nil {
						status = "FAILED: " + s.Err.Error()
						j.Error = s.Err.Error()
						if failed == nil {
							failed = fmt.Errorf("kms check %s: %w", s.Name, s.Err)
						}
					}
					doc.Steps = append(doc.Steps, j)
					if !e.json {
						fmt.Fprintf(w, "%s\t%s\t%s\n", s.Name, status, s.Detail)
					}
				}
				w.Flush()
				if e.json {
					doc.OK = failed == nil
					e.printJSON(doc)
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

func kmsRotateCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:  "rotate",
		Usage: "create a new version of the configured KEK (then: atrest rewrap --all)",
		Description: `New wraps and rewraps use the new version; tokens made with older versions
keep unwrapping until they are retired. With Vault this needs the rotate
permission, which node policies do not have (docs/vault.md): administrators
usually rotate in Vault itself.

EXAMPLES:
   atrest kms rotate && atrest rewrap --all

` + exitCodeHelp(),
		Action: func(c *ucli.Context) error {
			r, err := e.kekCapability(c)
			if err != nil {
				return err
			}
			rot, ok := r.(kms.Rotator)
			if !ok {
				return usagef("", fmt.Sprintf("the %s backend cannot rotate its key", r.Backend()))
			}
			info, err := rot.Rotate(c.Context)
			if err != nil {
				return err
			}
			return e.printKeyInfo(info, "rotated")
		},
	}
}

func kmsRetireCommand(e *env) *ucli.Command {
	return &ucli.Command{
		Name:      "retire",
		Usage:     "stop older KEK versions from unwrapping (after every token was rewrapped)",
		ArgsUsage: "--min-version N",
		Description: `Sets the minimum decryption version of the configured KEK: tokens wrapped
with older versions stop unwrapping. Run atrest rewrap --all on every node
first; atrest status shows tokens that would be cut off. The local
keystore destroys the retired versions.

EXAMPLES:
   atrest kms retire --min-version 3

` + exitCodeHelp(),
		Flags: []ucli.Flag{&ucli.IntFlag{Name: "min-version", Usage: "oldest version that still unwraps"}},
		Action: func(c *ucli.Context) error {
			if c.Int("min-version") < 1 {
				return usagef("atrest kms retire --min-version N", "--min-version is required")
			}
			r, err := e.kekCapability(c)
			if err != nil {
				return err
			}
			ret, ok := r.(kms.Retirer)
			if !ok {
				return usagef("", fmt.Sprintf("the %s backend cannot retire key versions", r.Backend()))
			}
			info, err := ret.SetMinDecryptionVersion(c.Context, c.Int("min-version"))
			if err != nil {
				return err
			}
			return e.printKeyInfo(info, "retired")
		},
	}
}

// kekCapability returns the configured KEK (not in vault-kv mode).
func (e *env) kekCapability(_ *ucli.Context) (kms.KEK, error) {
	m, err := e.manager()
	if err != nil {
		return nil, err
	}
	k, err := m.KMS().Wrapper()
	if err != nil {
		return nil, err
	}
	if k == nil {
		return nil, usagef("", "the vault-kv backend has no key-encryption key")
	}
	return k, nil
}

func (e *env) printKeyInfo(info kms.KeyInfo, what string) error {
	if e.json {
		e.printJSON(keyInfoDoc{v1, info})
		return nil
	}
	e.printf("%s %s: latest version %d, minimum decryption version %d (%s)\n", info.Backend, info.Key, info.LatestVersion, info.MinDecryptionVersion, what)
	return nil
}
