package boot

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/atrest/atrest/integration/vm"
)

// The Machine's file methods: each queues a change to the root file
// system that the next Boot (or ReadFile) applies with debugfs.

func (m *Machine) queue(op editOp) {
	m.t.Helper()
	if err := m.edit.add(op); err != nil {
		m.t.Fatal(err)
	}
}

// WriteFile puts data at guest path (parents created, an existing file
// replaced), owned by root with mode perm.
func (m *Machine) WriteFile(guest string, data []byte, perm os.FileMode) {
	m.t.Helper()
	m.staged++
	host := filepath.Join(m.work, "staged", fmt.Sprintf("%d", m.staged))
	if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(host, data, 0o600); err != nil {
		m.t.Fatal(err)
	}
	m.queue(editOp{guest: guest, host: host, perm: perm})
}

// CopyFile puts the host file at guest path, owned by root with mode
// perm. The file is read when the change is applied (at the next boot).
func (m *Machine) CopyFile(guest, host string, perm os.FileMode) {
	m.t.Helper()
	st, err := os.Stat(host)
	if err != nil || !st.Mode().IsRegular() {
		m.t.Fatalf("boot: %s is not a regular file (%v)", host, err)
	}
	abs, _ := filepath.Abs(host)
	m.queue(editOp{guest: guest, host: abs, perm: perm})
}

// InstallProgram copies a static host program (e.g. built with
// CGO_ENABLED=0) to guest path with mode 0755. The image's libraries are
// Debian's, not the host's: a dynamically linked program fails here.
func (m *Machine) InstallProgram(guest, host string) {
	m.t.Helper()
	static, err := vm.IsStatic(host)
	if err != nil {
		m.t.Fatal(err)
	}
	if !static {
		m.t.Fatalf("boot: %s is dynamically linked; build it with CGO_ENABLED=0", host)
	}
	m.CopyFile(guest, host, 0o755)
}

// CopyTree copies the host directory tree below src into the guest at
// dst, keeping each file's permission bits and symlinks, owned by root:
// the way to install a `make install DESTDIR=src` staging tree (dst "/").
func (m *Machine) CopyTree(dst, src string) {
	m.t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		g := path.Join(dst, filepath.ToSlash(rel))
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m.Symlink(g, target)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			m.CopyFile(g, p, info.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		m.t.Fatalf("boot: copy tree %s: %v", src, err)
	}
}

// Symlink makes guest path a symlink to target.
func (m *Machine) Symlink(guest, target string) {
	m.t.Helper()
	m.queue(editOp{guest: guest, link: target})
}

// Remove deletes a file or symlink at guest path if it exists.
func (m *Machine) Remove(guest string) {
	m.t.Helper()
	m.queue(editOp{guest: guest, rm: true})
}

// InstallUnit writes a unit file to /etc/systemd/system/name.
func (m *Machine) InstallUnit(name, content string) {
	m.t.Helper()
	m.WriteFile("/etc/systemd/system/"+name, []byte(content), 0o644)
}

// Enable links unit into target's .wants directory under /etc, as
// `systemctl enable` does for WantedBy=target. The link points at the
// unit file queued for the guest (InstallUnit, CopyTree), else at the
// one already in the image under /etc/systemd/system or /lib/systemd/system.
func (m *Machine) Enable(unit, target string) {
	m.t.Helper()
	m.Symlink("/etc/systemd/system/"+target+".wants/"+unit, m.unitPath(unit))
}

// unitPath finds where unit's file is or will be in the guest.
func (m *Machine) unitPath(unit string) string {
	candidates := []string{"/etc/systemd/system/" + unit, "/usr/lib/systemd/system/" + unit}
	for i := len(m.edit.ops) - 1; i >= 0; i-- {
		op := m.edit.ops[i]
		for _, c := range candidates {
			if op.guest == c && !op.rm {
				return c
			}
		}
	}
	types, err := statPaths(context.Background(), m.root, map[string]bool{candidates[0]: true, candidates[1]: true})
	if err == nil && types[candidates[0]] == "" && types[candidates[1]] != "" {
		return candidates[1]
	}
	return candidates[0]
}

// ReadFile returns a regular file of the root file system, as the last
// boot left it, with the queued changes applied.
func (m *Machine) ReadFile(guest string) ([]byte, error) {
	ctx := context.Background()
	if err := m.prepareRoot(ctx); err != nil {
		return nil, err
	}
	return readGuestFile(ctx, m.root, guest)
}
