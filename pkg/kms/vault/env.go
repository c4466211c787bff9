package vault

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

// EnvToken is the environment variable the vault CLI and atrest read a
// token from.
const EnvToken = "VAULT_TOKEN"

// envToken is VAULT_TOKEN as TakeEnvToken found it: one Go string for the
// life of the process, which WithEnv uses once the variable is gone (on
// every reload of atrestd's configuration, too).
var envToken struct {
	mu    sync.Mutex
	value string
}

// TakeEnvToken moves VAULT_TOKEN out of the process environment, so that
// neither child processes nor /proc/PID/environ see it from then on: it
// keeps the token in one string, unsets the variable, and zeroes both the
// Go runtime's copy of the variable and the original in the environment
// block the kernel shows as /proc/PID/environ. It returns a warning for the
// operator when the variable was set, else "". Call it first thing in
// main: until it runs, and in the environment of whatever started the
// process (a shell, a systemd unit's Environment=), the token stays
// readable; a token file is the safe way.
func TakeEnvToken() string {
	v, ok := os.LookupEnv(EnvToken)
	if !ok {
		return ""
	}
	tok := strings.Clone(v)
	var entries []string // the runtime's "VAULT_TOKEN=..." strings
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, EnvToken+"=") {
			entries = append(entries, e)
		}
	}
	_ = os.Unsetenv(EnvToken)
	for _, e := range entries {
		// No longer referenced by the environment; heap memory.
		clear(unsafe.Slice(unsafe.StringData(e), len(e))[len(EnvToken)+1:])
	}
	scrubEnviron()
	envToken.mu.Lock()
	envToken.value = tok
	envToken.mu.Unlock()
	return EnvToken + " is set: a token in the environment can be read in /proc/PID/environ of the process that started this one " +
		"(and of this one until it removed it); put the token in a root-only file named by vault.auth.token_file instead (docs/vault.md)"
}

// takenEnvToken returns what TakeEnvToken took, or "".
func takenEnvToken() string {
	envToken.mu.Lock()
	defer envToken.mu.Unlock()
	return envToken.value
}

// scrubEnviron zeroes the value of every VAULT_TOKEN= entry in the
// process's original environment block (env_start..env_end in
// /proc/self/stat), which the Go runtime copied at start and never looks
// at again, through /proc/self/mem.
func scrubEnviron() {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces; env_start and env_end are fields 50 and 51.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 49 {
		return
	}
	start, err1 := strconv.ParseInt(f[47], 10, 64)
	end, err2 := strconv.ParseInt(f[48], 10, 64)
	if err1 != nil || err2 != nil || start <= 0 || end <= start || end-start > 1<<24 {
		return
	}
	mem, err := os.OpenFile("/proc/self/mem", os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer mem.Close()
	block := make([]byte, end-start)
	if _, err := mem.ReadAt(block, start); err != nil {
		return
	}
	prefix := []byte(EnvToken + "=")
	for off := 0; off < len(block); {
		n := bytes.IndexByte(block[off:], 0)
		if n < 0 {
			n = len(block) - off
		}
		if entry := block[off : off+n]; bytes.HasPrefix(entry, prefix) {
			value := entry[len(prefix):]
			clear(value)
			_, _ = mem.WriteAt(value, start+int64(off+len(prefix)))
		}
		off += n + 1
	}
	clear(block)
}
