package vm

import (
	"bytes"
	"strconv"
	"strings"
)

// Markers the guest's /init writes to the results port. Serial output may
// carry CRLF line ends and stray escape codes before the first marker, so
// they are matched as substrings of a line.
const (
	markBooted       = "ATREST-VM-BOOTED "
	markModuleFailed = "ATREST-VM-MODULE-FAILED "
	markBegin        = "ATREST-VM-BEGIN "
	markEnd          = "ATREST-VM-END "
	markDone         = "ATREST-VM-DONE"
)

// Results is what the guest reported on its results port.
type Results struct {
	// Booted is set once /init ran; Kernel is the guest's uname -r.
	Booted bool
	Kernel string
	// ModuleFailures lists kernel modules insmod could not load.
	ModuleFailures []string
	// Binaries are the test binaries that started, in order.
	Binaries []*BinaryResult
	// Done is set when /init got through every binary.
	Done bool
}

// BinaryResult is one test binary's run in the guest.
type BinaryResult struct {
	Name string
	// Output is what the binary wrote (-test.v=test2json framing).
	Output []byte
	// Ended is set when the binary exited; ExitCode is its status.
	Ended    bool
	ExitCode int
}

// Binary returns the result of the named binary, or nil.
func (r *Results) Binary(name string) *BinaryResult {
	for _, b := range r.Binaries {
		if b.Name == name {
			return b
		}
	}
	return nil
}

// ParseResults reads the results port's capture.
func ParseResults(data []byte) *Results {
	r := &Results{}
	var cur *BinaryResult
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		text := strings.TrimRight(string(line), "\r\n")
		switch {
		case strings.Contains(text, markBegin):
			name := field(text, markBegin)
			cur = &BinaryResult{Name: name}
			r.Binaries = append(r.Binaries, cur)
			continue
		case cur != nil && strings.Contains(text, markEnd+cur.Name+" "):
			rc, err := strconv.Atoi(field(text, markEnd+cur.Name+" "))
			cur.Ended, cur.ExitCode = true, rc
			if err != nil {
				cur.ExitCode = -1
			}
			cur = nil
			continue
		case cur != nil:
			// Inside a binary's output only its end marker counts.
			cur.Output = append(cur.Output, bytes.ReplaceAll(line, []byte("\r\n"), []byte("\n"))...)
			continue
		case strings.Contains(text, markBooted):
			r.Booted, r.Kernel = true, field(text, markBooted)
		case strings.Contains(text, markModuleFailed):
			r.ModuleFailures = append(r.ModuleFailures, field(text, markModuleFailed))
		case strings.Contains(text, markDone):
			r.Done = true
		}
	}
	return r
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
