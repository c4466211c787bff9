package vm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// Archive writes a newc ("070701") cpio archive, the format the kernel
// unpacks as an initramfs. Parent directories are added on demand, every
// entry is owned by root with mtime 0, and an entry given twice keeps the
// last content (the kernel unpacks in order and overwrites).
type Archive struct {
	w    *bufio.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

// NewArchive starts an archive on w. Close writes the trailer.
func NewArchive(w io.Writer) *Archive {
	return &Archive{w: bufio.NewWriterSize(w, 1<<20), ino: 1, dirs: map[string]bool{"/": true}}
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
	modeChar = 0o020000
)

// Dir adds directory name (and its parents) with permissions perm.
func (a *Archive) Dir(name string, perm uint32) {
	name = clean(name)
	if a.dirs[name] {
		return
	}
	a.parents(name)
	a.dirs[name] = true
	a.header(name, modeDir|perm&0o7777, 0, 0, 0)
}

// File adds a regular file with the given content.
func (a *Archive) File(name string, perm uint32, data []byte) {
	name = clean(name)
	a.parents(name)
	a.header(name, modeFile|perm&0o7777, uint32(len(data)), 0, 0)
	a.write(data)
	a.pad(len(data))
}

// CopyFile adds the host file src (symlinks followed) as name, keeping
// its permission bits.
func (a *Archive) CopyFile(name, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("vm: %s is not a regular file", src)
	}
	if st.Size() > 1<<31 {
		return fmt.Errorf("vm: %s is too large for an initramfs", src)
	}
	name = clean(name)
	a.parents(name)
	a.header(name, modeFile|uint32(st.Mode().Perm()), uint32(st.Size()), 0, 0)
	if a.err == nil {
		n, err := io.CopyN(a.w, f, st.Size())
		if err != nil {
			a.err = fmt.Errorf("vm: copy %s: %w", src, err)
		}
		a.pad(int(n))
	}
	return a.err
}

// Symlink adds name pointing at target.
func (a *Archive) Symlink(name, target string) {
	name = clean(name)
	a.parents(name)
	a.header(name, modeLink|0o777, uint32(len(target)), 0, 0)
	a.write([]byte(target))
	a.pad(len(target))
}

// CharDev adds a character device node.
func (a *Archive) CharDev(name string, perm, major, minor uint32) {
	name = clean(name)
	a.parents(name)
	a.header(name, modeChar|perm&0o7777, 0, major, minor)
}

// Close writes the trailer and flushes; it reports the first error.
func (a *Archive) Close() error {
	a.ino = 0
	a.header("TRAILER!!!", 0, 0, 0, 0)
	if a.err == nil {
		a.err = a.w.Flush()
	}
	return a.err
}

func clean(name string) string { return path.Clean("/" + name) }

func (a *Archive) parents(name string) {
	if dir := path.Dir(name); !a.dirs[dir] {
		a.Dir(dir, 0o755)
	}
}

// header writes one newc header. Names are stored without the leading
// slash, as cpio -H newc does.
func (a *Archive) header(name string, mode, size, rmajor, rminor uint32) {
	stored := strings.TrimPrefix(name, "/")
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	ino := a.ino
	if ino != 0 {
		a.ino++
	}
	h := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, len(stored)+1, 0)
	a.write([]byte(h))
	a.write([]byte(stored))
	a.write([]byte{0})
	a.pad(len(h) + len(stored) + 1)
}

func (a *Archive) write(b []byte) {
	if a.err == nil {
		_, a.err = a.w.Write(b)
	}
}

// pad aligns to 4 bytes after n bytes of a header or of data.
func (a *Archive) pad(n int) {
	if r := n % 4; r != 0 {
		a.write(make([]byte, 4-r))
	}
}
