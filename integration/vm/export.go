package vm

import (
	"context"
	"strings"
)

// Small helpers exported for other tiers that boot the same kernel with
// their own guest (integration/boot), so that they share the cache lock
// and the failure messages of this tier.

// LockFile takes an exclusive flock on path, creating it, and returns its
// release. It serialises processes that prepare a shared cache entry.
func LockFile(path string) (func(), error) { return lockFile(path) }

// ConsoleHint names a console log and quotes its last lines, for failure
// messages that must say where to look.
func ConsoleHint(console string) string { return consoleHint(console) }

// IsStatic reports whether the ELF file at path has no program
// interpreter, i.e. runs without the host's shared libraries.
func IsStatic(path string) (bool, error) { return isStatic(path) }

// GoTool returns the go command of the toolchain running the tests.
func GoTool() string { return goTool() }

// ArchiveModules adds module files (host paths inside the kernel tree, as
// Modules returns them) to a at their guest paths, and a list of those
// paths, one a line in load order, as the file list.
func (k *Kernel) ArchiveModules(a *Archive, mods []string, list string) error {
	var names strings.Builder
	for _, m := range mods {
		g, err := k.GuestPath(m)
		if err != nil {
			return err
		}
		if err := a.CopyFile(g, m); err != nil {
			return err
		}
		names.WriteString(g + "\n")
	}
	a.File(list, 0o644, []byte(names.String()))
	return nil
}

// LibraryFiles maps each library in libs (TPMLibraries), and every
// library it links, to the same path in the guest.
func LibraryFiles(ctx context.Context, libs []string) (map[string]string, error) {
	return libraryFiles(ctx, libs)
}
