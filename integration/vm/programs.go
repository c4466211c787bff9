package vm

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// BusyboxPath is the static busybox (Debian's busybox-static) the guest
// runs as its shell and tool box.
const BusyboxPath = "/bin/busybox"

// DefaultPrograms are the host programs every guest gets, with their
// libraries: cryptsetup is the interop oracle, mke2fs makes ext4 (busybox's
// makes only ext2), dmsetup shows tables as an administrator sees them.
var DefaultPrograms = []string{"cryptsetup", "mke2fs", "dmsetup"}

// programFiles maps guest paths to host files for the named host programs
// and every shared library they load. Programs go to /usr/sbin; libraries
// keep the path the host's loader resolved them to.
func programFiles(ctx context.Context, names []string) (map[string]string, error) {
	files := map[string]string{}
	libDirs := map[string]bool{}
	for _, n := range names {
		p, err := lookProgram(n)
		if err != nil {
			return nil, err
		}
		files["/usr/sbin/"+n] = p
		libs, err := sharedLibs(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, l := range libs {
			files[l] = l
			libDirs[filepath.Dir(l)] = true
		}
	}
	// glibc loads libgcc_s at run time (thread cancellation, unwinding),
	// which ldd cannot see.
	for d := range libDirs {
		if p := filepath.Join(d, "libgcc_s.so.1"); fileExists(p) {
			files[p] = p
		}
	}
	if _, ok := files["/usr/sbin/mke2fs"]; ok {
		files["/usr/sbin/mkfs.ext4"] = files["/usr/sbin/mke2fs"]
		if fileExists("/etc/mke2fs.conf") {
			files["/etc/mke2fs.conf"] = "/etc/mke2fs.conf"
		}
	}
	return files, nil
}

// lookProgram finds a host program on PATH or in the sbin directories,
// which a non-root PATH lacks.
func lookProgram(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return filepath.EvalSymlinks(p)
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if p := filepath.Join(d, name); fileExists(p) {
			return filepath.EvalSymlinks(p)
		}
	}
	return "", fmt.Errorf("vm: host program %s not found (see the package list in .ci/run)", name)
}

// sharedLibs lists the libraries ldd resolves for the program at p,
// including the dynamic loader.
func sharedLibs(ctx context.Context, p string) ([]string, error) {
	if static, err := isStatic(p); err != nil || static {
		return nil, err
	}
	return ldd(ctx, p)
}

// ldd lists the libraries ldd resolves for the executable or shared
// library at p (a library has no interpreter, so isStatic cannot tell).
func ldd(ctx context.Context, p string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ldd", p).Output()
	if err != nil {
		return nil, fmt.Errorf("vm: ldd %s: %w", p, err)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("vm: %s: library missing on the host: %s", p, line)
		}
		var lib string
		if _, after, ok := strings.Cut(line, "=>"); ok {
			lib = strings.Fields(after + " ")[0]
		} else if strings.HasPrefix(line, "/") {
			lib = strings.Fields(line)[0]
		}
		if strings.HasPrefix(lib, "/") {
			libs = append(libs, lib)
		}
	}
	sort.Strings(libs)
	return libs, nil
}

// isStatic reports whether the ELF file at p has no program interpreter.
func isStatic(p string) (bool, error) {
	f, err := elf.Open(p)
	if err != nil {
		return false, fmt.Errorf("vm: %s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
