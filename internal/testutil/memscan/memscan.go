// Package memscan looks for secrets in the memory of a running process, the
// way an attacker with a core dump or /proc/PID/mem would: it reads every
// readable mapping of the process and counts the copies of a byte string,
// separating those in locked, not-dumped pages (secret.Key's) from those in
// ordinary memory (the Go heap, stacks, library buffers).
//
// AtExit runs a program under ptrace and inspects it when it is about to
// exit, with all its memory still in place, so that a test can scan a real
// binary after a real command without a hook in the program.
package memscan

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Counts is where the copies of one needle were found.
type Counts struct {
	// Plain counts copies in memory that is neither mlocked nor excluded
	// from core dumps: what a core dump or swap would show.
	Plain int
	// Protected counts copies in mlocked, MADV_DONTDUMP pages.
	Protected int
	// Where names the mappings of the plain copies, e.g. "[heap]" or
	// "anon 7f12…", one entry per copy.
	Where []string
	// Before holds up to 32 bytes preceding each plain copy (quoted), which
	// usually tells whose buffer it is: an HTTP header, a JSON field.
	Before []string
}

type mapping struct {
	start, end uint64
	name       string
	readable   bool
	flags      map[string]bool
}

func mappings(pid int) ([]mapping, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if fields[0] == "VmFlags:" && len(out) > 0 {
			m := &out[len(out)-1]
			for _, fl := range fields[1:] {
				m.flags[fl] = true
			}
			continue
		}
		lo, hi, isRange := strings.Cut(fields[0], "-")
		if !isRange || len(fields) < 5 || strings.HasSuffix(fields[0], ":") {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		name := "anon " + lo
		if len(fields) >= 6 {
			name = fields[5]
		}
		out = append(out, mapping{start: start, end: end, name: name, readable: fields[1][0] == 'r', flags: map[string]bool{}})
	}
	return out, sc.Err()
}

// Scan counts the copies of each needle in the memory of process pid. The
// caller must be allowed to read /proc/PID/mem (root, or the tracer).
func Scan(pid int, needles ...[]byte) ([]Counts, error) {
	maps, err := mappings(pid)
	if err != nil {
		return nil, err
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return nil, err
	}
	defer mem.Close()
	longest := 0
	for _, n := range needles {
		longest = max(longest, len(n))
	}
	out := make([]Counts, len(needles))
	const chunk = 1 << 20
	buf := make([]byte, chunk+longest)
	defer clear(buf)
	for _, m := range maps {
		if !m.readable || m.name == "[vvar]" || m.name == "[vsyscall]" || m.name == "[vvar_vclock]" {
			continue
		}
		protected := m.flags["lo"] && m.flags["dd"]
		keep := 0 // bytes carried over from the previous chunk
		for off := m.start; off < m.end; {
			n := min(uint64(chunk), m.end-off)
			got, err := mem.ReadAt(buf[keep:keep+int(n)], int64(off))
			if err != nil && err != io.EOF && got == 0 {
				break // an unreadable mapping (guard pages, device memory)
			}
			data := buf[:keep+got]
			for i, nd := range needles {
				// Only matches that end in the new bytes: those wholly in
				// the carried-over part were counted with the last chunk.
				from := 0
				for {
					j := bytes.Index(data[from:], nd)
					if j < 0 {
						break
					}
					at := from + j
					if at+len(nd) > keep {
						if protected {
							out[i].Protected++
						} else {
							out[i].Plain++
							out[i].Where = append(out[i].Where, m.name)
							out[i].Before = append(out[i].Before, strconv.Quote(string(data[max(0, at-32):at])))
						}
					}
					from = at + 1
				}
			}
			keep = min(longest-1, len(data))
			copy(buf, data[len(data)-keep:])
			off += uint64(got)
			if got == 0 {
				break
			}
		}
	}
	return out, nil
}
