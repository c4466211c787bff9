package boot

import (
	_ "embed"
	"fmt"
	"path/filepath"
	"strings"
)

// Check is one thing to run in the booted guest once the boot's target
// is reached. Checks run in order, one at a time, as root, with no
// standard input, ATREST_BOOT_GUEST=1 and ATREST_TEST_STRICT=1 in the
// environment; stdout and stderr together are the check's output.
type Check struct {
	// Name identifies the check in results and failures (letters,
	// digits, '.', '_', '-'); unique within a boot.
	Name string
	// Script is a shell script, run by /bin/sh with `set -eu`.
	Script string
	// Program is a host program (static: CGO_ENABLED=0) copied into the
	// guest and run with Args instead of a script.
	Program string
	Args    []string
	// Collect marks a check whose output is wanted whatever its exit
	// status (systemctl status exits 3 for an inactive unit): a non-zero
	// status does not fail the test. It still must run and finish.
	Collect bool
}

// Script returns a check that runs a shell script with `set -eu`: the
// first failing command fails the check.
func Script(name, script string) Check { return Check{Name: name, Script: script} }

// Program returns a check that runs a static host program with args.
func Program(name, host string, args ...string) Check {
	return Check{Name: name, Program: host, Args: args}
}

// Collect returns a check that keeps the output of a shell command
// whatever its exit status, for assertions on the host.
func Collect(name, command string) Check {
	return Check{Name: name, Script: command, Collect: true}
}

// Journal collects unit's journal of the current boot as JSON lines
// (journalctl -b -o json); Result.Journal decodes it. The check's name
// is "journal:" + unit.
func Journal(unit string) Check {
	return Collect("journal:"+unit, "journalctl -b -o json --no-pager -u "+shellQuote(unit))
}

// Status collects `systemctl status` of unit; the check's name is
// "status:" + unit.
func Status(unit string) Check {
	return Collect("status:"+unit, "systemctl status --no-pager --full "+shellQuote(unit))
}

// Analyze collects `systemd-analyze` (boot time) and `systemd-analyze
// blame`; the check's name is "analyze".
func Analyze() Check {
	return Collect("analyze", "systemd-analyze time\nsystemd-analyze blame --no-pager")
}

//go:embed runner.sh
var runnerScript []byte

//go:embed emergency.sh
var emergencyScript []byte

// Guest paths of the harness's own files.
const (
	guestDir     = "/etc/atrest-boot"
	runnerPath   = "/usr/local/lib/atrest-boot/runner"
	emergencyBin = "/usr/local/lib/atrest-boot/emergency"
	runnerUnit   = "atrest-boot-runner.service"
)

// runnerUnitFile orders the runner after the boot's target. It is wanted
// by multi-user.target, the default target, whatever it waits for.
func runnerUnitFile(after string) string {
	return fmt.Sprintf(`[Unit]
Description=atrest boot-tier checks
Wants=%[1]s
After=%[1]s

[Service]
Type=exec
ExecStart=%[2]s
StandardInput=null
TimeoutStartSec=infinity
`, after, runnerPath)
}

// emergencyDropIn reports and powers off before an emergency or rescue
// shell would wait for a password.
func emergencyDropIn(shell string) string {
	return fmt.Sprintf("[Service]\nExecStartPre=-%s %s\n", emergencyBin, shell)
}

// installChecks queues the runner, its unit, the emergency hooks and this
// boot's checks (replacing the previous boot's).
func (m *Machine) installChecks(after string, checks []Check) error {
	seen := map[string]bool{}
	var list strings.Builder
	for _, c := range checks {
		if c.Name == "" || strings.ContainsAny(c.Name, " \t\n/\"'\\$`") || seen[c.Name] {
			return fmt.Errorf("boot: check name %q is empty, repeated or has a space, slash, quote or $", c.Name)
		}
		seen[c.Name] = true
		var script string
		switch {
		case (c.Script == "") == (c.Program == ""):
			return fmt.Errorf("boot: check %s needs exactly one of Script and Program", c.Name)
		case c.Script != "":
			script = "#!/bin/sh\nset -eu\n" + c.Script + "\n"
		default:
			bin := "/usr/local/lib/atrest-boot/programs/" + filepath.Base(c.Program)
			m.InstallProgram(bin, c.Program)
			script = "#!/bin/sh\nexec " + shellQuote(bin)
			for _, a := range c.Args {
				script += " " + shellQuote(a)
			}
			script += "\n"
		}
		m.WriteFile(guestDir+"/checks/"+c.Name, []byte(script), 0o755)
		list.WriteString(c.Name + "\n")
	}
	if c := strings.ContainsAny(after, "\n\"'\\$`"); c || strings.TrimSpace(after) == "" {
		return fmt.Errorf("boot: target %q: name one or more units, separated by spaces", after)
	}
	m.WriteFile(guestDir+"/checks.list", []byte(list.String()), 0o644)
	m.WriteFile(guestDir+"/after", []byte(after+"\n"), 0o644)
	m.WriteFile(runnerPath, runnerScript, 0o755)
	m.WriteFile(emergencyBin, emergencyScript, 0o755)
	m.InstallUnit(runnerUnit, runnerUnitFile(after))
	m.Enable(runnerUnit, "multi-user.target")
	for _, s := range []string{"emergency", "rescue"} {
		m.WriteFile("/etc/systemd/system/"+s+".service.d/atrest-boot.conf", []byte(emergencyDropIn(s)), 0o644)
	}
	return nil
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
