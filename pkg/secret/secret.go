// Package secret owns the one type that holds key material in atrest.
//
// A Key lives in anonymous memory mapped outside the Go heap, so the garbage
// collector never copies it; the memory is mlocked (never swapped) and
// excluded from core dumps and forked children. Wipe zeroes it and gives it
// back: a large key's mapping is unmapped, a small key's slot of a page
// shared with other small keys is returned, and the page unmapped when its
// last key is wiped (pool.go). A Key never
// prints its contents: every fmt verb, String, GoString and JSON marshalling
// yield a redacted placeholder. Compare keys with Equal, which runs in
// constant time.
//
// Every path that obtains a Key must release it with Wipe (usually
// `defer k.Wipe()`). A cleanup attached to each Key wipes forgotten ones when
// they become unreachable, but that is a safety net, not a contract.
package secret

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// MaxLen bounds a single Key; atrest's largest secrets are 64-byte volume keys
// and anti-forensic split material of a few hundred KiB.
const MaxLen = 16 << 20

// ErrWiped is returned when a wiped Key is used.
var ErrWiped = errors.New("secret: key already wiped")

// ErrEmpty: Read found no secret (empty input, or only a newline).
var ErrEmpty = errors.New("secret: empty input")

// ErrMemoryLock: the kernel refused to lock a Key's memory (RLIMIT_MEMLOCK
// too low).
var ErrMemoryLock = errors.New("secret: cannot lock key memory")

// Key holds secret bytes in locked memory. The zero value is not usable; make
// Keys with New, Random, FromBytes or Read.
type Key struct {
	mu  sync.Mutex
	mem *region
}

// region is a Key's locked memory, shared with the cleanup so that a
// forgotten Key is still wiped after it becomes unreachable: a mapping of
// its own, or a slot of a page shared with other small keys (pool.go).
type region struct {
	page []byte // the whole mapping, or the whole slot
	n    int    // bytes in use
	pg   *page  // the shared page holding the slot; nil for a mapping of its own
	off  int    // the slot's offset in pg
	once sync.Once
}

func (r *region) wipe() {
	r.once.Do(func() {
		clear(r.page)
		if r.pg != nil {
			small.put(r.pg, r.off)
		} else {
			unmapLocked(r.page)
		}
		r.page = nil
	})
}

// New returns a zeroed Key of n bytes in locked memory. It fails when the
// memory cannot be locked (RLIMIT_MEMLOCK too low): atrest refuses to hold
// keys in swappable memory rather than degrade silently. A key of up to a
// quarter of a page takes a slot of a locked page shared with other small
// keys (pool.go); a larger one a mapping of its own.
func New(n int) (*Key, error) {
	if n <= 0 || n > MaxLen {
		return nil, fmt.Errorf("secret: invalid key length %d", n)
	}
	r := &region{n: n}
	if size := slotSize(n); size <= maxSlot() {
		pg, off, err := small.get(size)
		if err != nil {
			return nil, err
		}
		r.pg, r.off, r.page = pg, off, pg.mem[off:off+size:off+size]
	} else {
		size := (n + unix.Getpagesize() - 1) &^ (unix.Getpagesize() - 1)
		page, err := mapLocked(size)
		if err != nil {
			return nil, err
		}
		r.page = page
	}
	k := &Key{mem: r}
	runtime.AddCleanup(k, func(r *region) { r.wipe() }, k.mem)
	return k, nil
}

// mapLocked maps size bytes of anonymous memory (a multiple of the page
// size), locked, out of core dumps and forked children.
func mapLocked(size int) ([]byte, error) {
	page, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("secret: allocate %d bytes: %w", size, err)
	}
	if err := unix.Mlock(page); err != nil {
		_ = unix.Munmap(page)
		return nil, fmt.Errorf("%w: %d bytes (raise LimitMEMLOCK/ulimit -l): %w", ErrMemoryLock, size, err)
	}
	// Best effort: keep key pages out of core dumps and forked children.
	_ = unix.Madvise(page, unix.MADV_DONTDUMP)
	_ = unix.Madvise(page, unix.MADV_DONTFORK)
	return page, nil
}

// unmapLocked unlocks and unmaps a mapping of mapLocked, already zeroed.
func unmapLocked(page []byte) {
	_ = unix.Munlock(page)
	_ = unix.Munmap(page)
}

// Random returns a Key of n bytes from the operating system's CSPRNG.
func Random(n int) (*Key, error) {
	k, err := New(n)
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(rand.Reader, k.Bytes()); err != nil {
		k.Wipe()
		return nil, fmt.Errorf("secret: read random bytes: %w", err)
	}
	return k, nil
}

// FromBytes copies b into a new Key and then zeroes b, so the caller's
// heap copy does not outlive the call.
func FromBytes(b []byte) (*Key, error) {
	defer clear(b)
	k, err := New(len(b))
	if err != nil {
		return nil, err
	}
	copy(k.Bytes(), b)
	return k, nil
}

// Read reads all of r, up to max bytes, straight into locked memory. It is
// meant for key files and standard input; one trailing newline is dropped
// when trimNewline is set. Reading more than max bytes is an error.
func Read(r io.Reader, max int, trimNewline bool) (*Key, error) {
	if max <= 0 || max > MaxLen {
		return nil, fmt.Errorf("secret: invalid read limit %d", max)
	}
	buf, err := New(max + 1)
	if err != nil {
		return nil, err
	}
	defer buf.Wipe()
	b := buf.Bytes()
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("secret: read: %w", err)
		}
	}
	if n > max {
		return nil, fmt.Errorf("secret: input longer than %d bytes", max)
	}
	if trimNewline && n > 0 && b[n-1] == '\n' {
		n--
		if n > 0 && b[n-1] == '\r' {
			n--
		}
	}
	if n == 0 {
		return nil, ErrEmpty
	}
	k, err := New(n)
	if err != nil {
		return nil, err
	}
	copy(k.Bytes(), b[:n])
	return k, nil
}

// Bytes returns the key's memory itself, not a copy. The slice is valid until
// Wipe; callers must not retain it beyond the Key's lifetime or copy it onto
// the heap. It panics if the Key was wiped, because using a wiped key is a bug.
func (k *Key) Bytes() []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.mem == nil || k.mem.page == nil {
		panic(ErrWiped)
	}
	return k.mem.page[:k.mem.n:k.mem.n]
}

// Len returns the key's length in bytes, or 0 once wiped.
func (k *Key) Len() int {
	if k == nil {
		return 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.mem == nil || k.mem.page == nil {
		return 0
	}
	return k.mem.n
}

// Wiped reports whether Wipe has run.
func (k *Key) Wiped() bool { return k.Len() == 0 }

// Clone returns an independent copy in its own locked memory.
func (k *Key) Clone() (*Key, error) {
	c, err := New(k.Len())
	if err != nil {
		return nil, err
	}
	copy(c.Bytes(), k.Bytes())
	return c, nil
}

// Equal reports whether both keys hold the same bytes, in constant time for
// keys of equal length.
func (k *Key) Equal(o *Key) bool {
	if k.Len() == 0 || o.Len() == 0 {
		return false
	}
	return subtle.ConstantTimeCompare(k.Bytes(), o.Bytes()) == 1
}

// Wipe zeroes the key, unlocks and unmaps its memory. It is safe to call more
// than once and on a nil Key.
func (k *Key) Wipe() {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.mem != nil {
		k.mem.wipe()
	}
}

const redacted = "secret.Key(REDACTED)"

// String never reveals the key.
func (k *Key) String() string { return redacted }

// GoString never reveals the key, including under %#v.
func (k *Key) GoString() string { return redacted }

// Format makes every fmt verb print the redacted placeholder.
func (k *Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// MarshalJSON refuses to serialise key material.
func (k *Key) MarshalJSON() ([]byte, error) {
	return nil, errors.New("secret: refusing to marshal key material")
}

// MarshalText refuses to serialise key material.
func (k *Key) MarshalText() ([]byte, error) {
	return nil, errors.New("secret: refusing to marshal key material")
}
