package boot

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Markers on the results port. Serial output may carry stray bytes before
// the first marker, so markers are matched as substrings of a line.
const (
	markInitramfs  = "ATREST-BOOT-INITRAMFS "
	markInitFailed = "ATREST-BOOT-INITRAMFS-FAILED "
	markSwitchRoot = "ATREST-BOOT-SWITCHROOT"
	markReached    = "ATREST-BOOT-REACHED "
	markState      = "ATREST-BOOT-STATE "
	markBegin      = "ATREST-BOOT-BEGIN "
	markEnd        = "ATREST-BOOT-END "
	markDone       = "ATREST-BOOT-DONE"
	markEmergency  = "ATREST-BOOT-EMERGENCY "
	markEmergEnd   = "ATREST-BOOT-EMERGENCY-END"
)

// Result is what one boot reported.
type Result struct {
	// Boot counts the machine's boots from 1.
	Boot int
	// Console is the first serial port's log: kernel, systemd status
	// lines, the serial getty. ResultsLog is the raw results port.
	Console, ResultsLog string
	// Duration is the host's wall time from QEMU start to its exit.
	Duration time.Duration

	// Kernel is the guest's uname -r, reported by the initramfs.
	Kernel string
	// InitramfsFailure says why the initramfs gave up, if it did.
	InitramfsFailure string
	// SwitchedRoot is set once the initramfs handed over to systemd.
	SwitchedRoot bool
	// Reached is set once the boot's target was reached and the
	// runner started; After is what it waited for.
	Reached bool
	After   string
	// SystemState is `systemctl is-system-running` once the boot
	// finished, before the checks: "running", or "degraded" when a unit
	// failed.
	SystemState string
	// Finished and ChecksDone are the guest's uptime when the boot had
	// finished (before the checks) and when the checks were done.
	Finished, ChecksDone time.Duration
	// Emergency names the shell (emergency or rescue) systemd fell back
	// to, and EmergencyReport is what the guest said then: failed units
	// and the boot's error-level journal.
	Emergency       string
	EmergencyReport string
	// Checks are the checks that started, in order.
	Checks []*CheckResult
	// Done is set when the runner got through every check.
	Done bool
}

// CheckResult is one check's run in the guest.
type CheckResult struct {
	Name string
	// Output is stdout and stderr together, byte for byte.
	Output []byte
	// Ended is set when the check exited; ExitCode is its status.
	Ended    bool
	ExitCode int
}

// Check returns the named check's result, or nil if it never started.
func (r *Result) Check(name string) *CheckResult {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Output returns the named check's output ("" if it never started).
func (r *Result) Output(name string) string {
	if c := r.Check(name); c != nil {
		return string(c.Output)
	}
	return ""
}

// Journal decodes the entries a Journal(unit) check collected.
func (r *Result) Journal(unit string) ([]map[string]any, error) {
	c := r.Check("journal:" + unit)
	if c == nil {
		return nil, fmt.Errorf("boot: no journal of %s was collected in boot %d", unit, r.Boot)
	}
	var entries []map[string]any
	dec := json.NewDecoder(bytes.NewReader(c.Output))
	for dec.More() {
		var e map[string]any
		if err := dec.Decode(&e); err != nil {
			return entries, fmt.Errorf("boot: journal of %s: %w", unit, err)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// parseResults reads the results port's capture.
func parseResults(data []byte) *Result {
	r := &Result{}
	var cur *CheckResult
	var raw []byte
	var emergency *strings.Builder
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		text := strings.TrimRight(string(line), "\r\n")
		if cur != nil {
			// Inside a check's output only its end marker counts.
			if _, rest, ok := strings.Cut(text, markEnd+cur.Name+" "); ok {
				f := strings.Fields(rest)
				cur.Ended, cur.ExitCode = true, -1
				if len(f) == 2 {
					rc, err1 := strconv.Atoi(f[0])
					n, err2 := strconv.Atoi(f[1])
					if err1 == nil && err2 == nil && n <= len(raw) {
						cur.ExitCode, cur.Output = rc, raw[:n]
					}
				}
				cur, raw = nil, nil
				continue
			}
			raw = append(raw, line...)
			cur.Output = raw
			continue
		}
		if emergency != nil && !strings.Contains(text, markEmergEnd) {
			emergency.WriteString(text + "\n")
			continue
		}
		switch {
		case strings.Contains(text, markEmergEnd):
			r.EmergencyReport = strings.TrimRight(emergency.String(), "\n")
			emergency = nil
		case strings.Contains(text, markInitFailed):
			_, r.InitramfsFailure, _ = strings.Cut(text, markInitFailed)
		case strings.Contains(text, markInitramfs):
			r.Kernel = field(text, markInitramfs)
		case strings.Contains(text, markSwitchRoot):
			r.SwitchedRoot = true
		case strings.Contains(text, markReached):
			r.Reached, r.After = true, strings.TrimSpace(after(text, markReached))
		case strings.Contains(text, markState):
			f := strings.Fields(after(text, markState))
			if len(f) > 0 {
				r.SystemState = f[0]
			}
			if len(f) > 1 {
				r.Finished = seconds(f[1])
			}
		case strings.Contains(text, markBegin):
			cur = &CheckResult{Name: field(text, markBegin)}
			r.Checks = append(r.Checks, cur)
		case strings.Contains(text, markDone):
			r.Done, r.ChecksDone = true, seconds(field(text, markDone))
		case strings.Contains(text, markEmergency):
			r.Emergency = field(text, markEmergency)
			emergency = &strings.Builder{}
		}
	}
	if emergency != nil {
		r.EmergencyReport = strings.TrimRight(emergency.String(), "\n")
	}
	return r
}

// after returns what follows marker in text.
func after(text, marker string) string {
	_, a, _ := strings.Cut(text, marker)
	return a
}

// seconds parses a /proc/uptime figure (0 when it is not one).
func seconds(s string) time.Duration {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return time.Duration(f * float64(time.Second)).Round(time.Millisecond)
}

// field returns the first word after marker in text.
func field(text, marker string) string {
	_, after, _ := strings.Cut(text, marker)
	f := strings.Fields(after)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
