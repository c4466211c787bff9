package boot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/atrest/atrest/integration/vm"
)

// DefaultTimeout bounds one boot: about 25 s to multi-user.target on an
// idle 2-core machine, several times that while Go builds share the cores.
const DefaultTimeout = 5 * time.Minute

// DefaultAfter is what the checks wait for unless a boot says otherwise.
const DefaultAfter = "multi-user.target"

// Spec is one boot of a Machine.
type Spec struct {
	// After names the unit(s), space-separated, the checks run after
	// (DefaultAfter when empty), e.g. "atrestd.service" to run once the
	// daemon is ready. The runner also Wants= them.
	After string
	// Checks run in order once After is active and the boot has
	// finished (no start job left); then the guest powers off. A boot
	// with no checks just boots, reaches After and stops.
	Checks []Check
	// Timeout bounds the boot (DefaultTimeout when zero).
	Timeout time.Duration
	// MemoryMiB sizes the guest (1024 when zero); CPUs defaults to 2.
	MemoryMiB, CPUs int
	// Append is added to the kernel command line.
	Append string
}

// Boot boots the machine once and returns what it reported. Anything
// short of every check run and passed (Collect checks need only finish)
// and a clean power-off fails the test now, naming the console log; see
// TryBoot to inspect a failing boot instead.
func (m *Machine) Boot(spec Spec) *Result {
	m.t.Helper()
	res, err := m.TryBoot(spec)
	if err != nil {
		m.t.Fatal(err)
	}
	return res
}

// TryBoot is Boot that returns the verdict as an error instead of failing
// the test (setup errors still fail it). The error wraps vm.ErrTimeout
// when the guest did not power off in time.
func (m *Machine) TryBoot(spec Spec) (*Result, error) {
	m.t.Helper()
	if spec.After == "" {
		spec.After = DefaultAfter
	}
	if spec.Timeout == 0 {
		spec.Timeout = DefaultTimeout
	}
	if spec.MemoryMiB == 0 {
		spec.MemoryMiB = 1024
	}
	ctx := context.Background()
	if err := m.installChecks(spec.After, spec.Checks); err != nil {
		m.t.Fatal(err)
	}
	start := time.Now()
	if err := m.prepareRoot(ctx); err != nil {
		m.t.Fatal(err)
	}
	m.boots++
	m.t.Logf("boot %d: root file system edited in %s", m.boots, time.Since(start).Round(time.Millisecond))
	prefix := filepath.Join(m.logs, fmt.Sprintf("boot%d-", m.boots))
	b := &vm.Boot{
		Kernel: m.img.Kernel.Image, Initrd: m.initrd,
		Append:    strings.TrimSpace("systemd.show_status=1 " + spec.Append),
		MemoryMiB: spec.MemoryMiB, CPUs: spec.CPUs,
		Disks:   append([]string{m.root}, m.disks...),
		Console: prefix + "console.log", Results: prefix + "results.log",
		Timeout: spec.Timeout,
	}
	m.t.Logf("boot %d: console log %s", m.boots, b.Console)
	var stopTPM func()
	b.TPMSocket, stopTPM = m.startTPM()
	start = time.Now()
	bootErr := b.Run(ctx)
	stopTPM()
	data, err := os.ReadFile(b.Results)
	if err != nil && bootErr == nil {
		bootErr = err
	}
	res := parseResults(data)
	res.Boot, res.Console, res.ResultsLog = m.boots, b.Console, b.Results
	res.Duration = time.Since(start)
	if res.ChecksDone > 0 {
		m.t.Logf("boot %d: guest ran for %s (boot finished at %s of guest uptime, checks done at %s)",
			m.boots, res.Duration.Round(time.Millisecond), res.Finished, res.ChecksDone)
	} else {
		m.t.Logf("boot %d: guest ran for %s", m.boots, res.Duration.Round(time.Millisecond))
	}
	return res, verdict(res, spec, bootErr)
}

// verdict is nil only for a boot that reached its target, ran every
// check to its end with status 0 (or just to its end for Collect
// checks) and powered off by itself. The error wraps bootErr (so
// vm.ErrTimeout stays visible to errors.Is) and names the logs.
func verdict(res *Result, spec Spec, bootErr error) error {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	switch {
	case res.Kernel == "":
		add("the guest never ran the initramfs (kernel, QEMU or initramfs problem)")
	case res.InitramfsFailure != "":
		add("the initramfs could not mount the root disk: %s", res.InitramfsFailure)
	case !res.SwitchedRoot:
		add("the initramfs never handed over to systemd")
	case res.Emergency != "":
		add("systemd fell back to the %s shell: a unit the boot needs failed:\n%s", res.Emergency, res.EmergencyReport)
	case !res.Reached:
		add("the boot never reached %s", spec.After)
	}
	if res.Reached {
		for _, c := range spec.Checks {
			cr := res.Check(c.Name)
			switch {
			case cr == nil:
				add("check %s never started", c.Name)
			case !cr.Ended:
				add("check %s did not finish (hung, or the guest died); its output so far:\n%s", c.Name, cr.Output)
			case cr.ExitCode != 0 && !c.Collect:
				add("check %s exited with status %d; its output:\n%s", c.Name, cr.ExitCode, cr.Output)
			}
		}
		if !res.Done && bootErr == nil {
			add("the check runner stopped before its end")
		}
	}
	if len(errs) == 0 && bootErr == nil {
		return nil
	}
	where := fmt.Sprintf("results log: %s\n%s", res.ResultsLog, vm.ConsoleHint(res.Console))
	if bootErr != nil {
		return fmt.Errorf("boot %d: %s\nthe guest did not power off by itself: %w\n%s", res.Boot, strings.Join(errs, "\nand "), bootErr, where)
	}
	return fmt.Errorf("boot %d: %s\n%s", res.Boot, strings.Join(errs, "\nand "), where)
}
