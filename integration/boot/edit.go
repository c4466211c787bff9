package boot

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
)

// editOp is one change to the root file system.
type editOp struct {
	guest string
	host  string      // file content for a regular file
	perm  os.FileMode // for a regular file
	link  string      // symlink target when set
	rm    bool
}

// rootEdit collects changes to an ext4 image and applies them in one
// debugfs run: no mount on the host, so no root-only mount namespace
// tricks and nothing left mounted when a test dies. debugfs's mkdir
// corrupts the file system when the directory exists, and its write
// refuses to overwrite, so apply first asks which paths exist.
type rootEdit struct {
	ops []editOp
}

// mergedUsr maps Debian's merged-/usr symlinks to their targets: debugfs
// does not follow a symlink in the last component of a parent directory.
var mergedUsr = map[string]string{"/bin": "/usr/bin", "/sbin": "/usr/sbin", "/lib": "/usr/lib", "/lib64": "/usr/lib64"}

// guestPath cleans an absolute guest path and resolves merged /usr.
func guestPath(p string) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("boot: guest path %q is not absolute", p)
	}
	if strings.ContainsAny(p, "\"\n\\") {
		return "", fmt.Errorf("boot: guest path %q contains a quote, backslash or newline", p)
	}
	p = path.Clean(p)
	for from, to := range mergedUsr {
		if p == from || strings.HasPrefix(p, from+"/") {
			return to + strings.TrimPrefix(p, from), nil
		}
	}
	return p, nil
}

func (e *rootEdit) add(op editOp) error {
	g, err := guestPath(op.guest)
	if err != nil {
		return err
	}
	if g == "/" {
		return errors.New("boot: cannot replace the root directory")
	}
	op.guest = g
	e.ops = append(e.ops, op)
	return nil
}

func (e *rootEdit) empty() bool { return len(e.ops) == 0 }

// apply runs the collected changes against image and clears them.
func (e *rootEdit) apply(ctx context.Context, image string) error {
	if e.empty() {
		return nil
	}
	query := map[string]bool{}
	for _, op := range e.ops {
		for d := op.guest; d != "/"; d = path.Dir(d) {
			query[d] = true
		}
	}
	types, err := statPaths(ctx, image, query)
	if err != nil {
		return err
	}
	var script strings.Builder
	cmd := func(format string, args ...any) { fmt.Fprintf(&script, format+"\n", args...) }
	for _, op := range e.ops {
		// Parents: create what is missing, outermost first.
		var missing []string
		for d := path.Dir(op.guest); d != "/"; d = path.Dir(d) {
			switch types[d] {
			case "":
				missing = append(missing, d)
			case "directory", "symlink":
			default:
				return fmt.Errorf("boot: %s: %s is a %s, not a directory", op.guest, d, types[d])
			}
		}
		for i := len(missing) - 1; i >= 0; i-- {
			cmd("mkdir %q", missing[i])
			types[missing[i]] = "directory"
		}
		switch t := types[op.guest]; t {
		case "":
		case "regular", "symlink":
			cmd("rm %q", op.guest)
		default:
			return fmt.Errorf("boot: cannot replace %s: it is a %s", op.guest, t)
		}
		switch {
		case op.rm:
			types[op.guest] = ""
		case op.link != "":
			cmd("symlink %q %q", op.guest, op.link)
			types[op.guest] = "symlink"
		default:
			cmd("write %q %q", op.host, op.guest)
			cmd("set_inode_field %q mode 0%o", op.guest, 0o100000|uint32(op.perm.Perm()))
			types[op.guest] = "regular"
		}
	}
	if _, err := debugfs(ctx, image, true, script.String()); err != nil {
		return err
	}
	e.ops = nil
	return nil
}

// statPaths reports the type debugfs gives each path ("regular",
// "directory", "symlink"...), or no entry when it does not exist.
func statPaths(ctx context.Context, image string, paths map[string]bool) (map[string]string, error) {
	sorted := make([]string, 0, len(paths))
	for p := range paths {
		sorted = append(sorted, p)
	}
	sort.Strings(sorted)
	var script strings.Builder
	for _, p := range sorted {
		fmt.Fprintf(&script, "stat %q\n", p)
	}
	// Errors (not found) go to stderr; stdout keeps each echoed command
	// followed by its answer, in order.
	out, _ := debugfs(ctx, image, false, script.String())
	types := map[string]string{}
	var cur string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "debugfs: stat "); ok {
			cur = strings.Trim(rest, `"`)
			continue
		}
		if cur != "" && strings.HasPrefix(line, "Inode:") {
			if _, t, ok := strings.Cut(line, "Type: "); ok {
				types[cur] = strings.Fields(t)[0]
			}
			cur = ""
		}
	}
	return types, nil
}

// debugfs runs a command script against image (read-write when rw). Any
// complaint on stderr beyond the version banner is an error unless the
// caller expects some (rw false: lookups of missing paths).
func debugfs(ctx context.Context, image string, rw bool, script string) ([]byte, error) {
	args := []string{"-f", "-", image}
	if rw {
		args = append([]string{"-w"}, args...)
	}
	cmd := exec.CommandContext(ctx, "debugfs", args...)
	cmd.Env = append(os.Environ(), "DEBUGFS_PAGER=__none__", "PAGER=__none__")
	cmd.Stdin = strings.NewReader(script)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var complaints []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") {
			complaints = append(complaints, l)
		}
	}
	if err == nil && rw && len(complaints) > 0 {
		err = errors.New(strings.Join(complaints, "; "))
	}
	if err != nil {
		return stdout.Bytes(), fmt.Errorf("boot: debugfs on %s: %w\nscript:\n%s", image, err, script)
	}
	return stdout.Bytes(), nil
}

// readGuestFile returns a file's content from image (debugfs cat).
func readGuestFile(ctx context.Context, image, guest string) ([]byte, error) {
	g, err := guestPath(guest)
	if err != nil {
		return nil, err
	}
	types, err := statPaths(ctx, image, map[string]bool{g: true})
	if err != nil {
		return nil, err
	}
	if types[g] != "regular" {
		return nil, fmt.Errorf("boot: %s in %s: %w", guest, image, os.ErrNotExist)
	}
	cmd := exec.CommandContext(ctx, "debugfs", "-R", fmt.Sprintf("cat %q", g), image)
	cmd.Env = append(os.Environ(), "DEBUGFS_PAGER=__none__", "PAGER=__none__")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("boot: debugfs cat %s: %w: %s", guest, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}
