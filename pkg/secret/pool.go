package secret

import (
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// Small keys share locked pages. A key of 32 bytes in a mapping of its own
// costs six system calls (mmap, mlock, two madvise, munlock, munmap) and a
// page of locked memory: an unlock of 24 volumes made 25 such mappings and
// 150 calls, more CPU than its TLS handshake (docs/fleet.md). A shared page
// is mapped and locked once for up to 128 keys; a slot is zeroed when its
// key is wiped, and the page unmapped when its last key is.

// minSlot is the smallest slot; slots are powers of two up to maxSlot.
const minSlot = 32

// maxSlot is the largest key that shares a page: a quarter of one.
func maxSlot() int { return unix.Getpagesize() / 4 }

// slotSize is the slot a key of n bytes takes.
func slotSize(n int) int {
	s := minSlot
	for s < n {
		s <<= 1
	}
	return s
}

// page is one locked page cut into slots of one size.
type page struct {
	mem  []byte
	size int   // of each slot
	free []int // offsets of the free slots
	used int
}

// pool holds the shared pages, by slot size.
type pool struct {
	mu    sync.Mutex
	pages map[int][]*page
}

var small = pool{pages: map[int][]*page{}}

// get returns a zeroed slot of size bytes: its page and offset.
func (p *pool) get(size int) (*page, int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var pg *page
	for _, c := range p.pages[size] {
		if len(c.free) > 0 {
			pg = c
			break
		}
	}
	if pg == nil {
		mem, err := mapLocked(unix.Getpagesize())
		if err != nil {
			return nil, 0, err
		}
		pg = &page{mem: mem, size: size}
		for off := len(mem) - size; off >= 0; off -= size {
			pg.free = append(pg.free, off) // the first slot handed out is at the page's start
		}
		p.pages[size] = append(p.pages[size], pg)
	}
	off := pg.free[len(pg.free)-1]
	pg.free = pg.free[:len(pg.free)-1]
	pg.used++
	return pg, off, nil
}

// put returns the slot at off of pg, which its key has zeroed; a page with
// no key left is unmapped.
func (p *pool) put(pg *page, off int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pg.free = append(pg.free, off)
	if pg.used--; pg.used > 0 {
		return
	}
	p.pages[pg.size] = slices.DeleteFunc(p.pages[pg.size], func(c *page) bool { return c == pg })
	unmapLocked(pg.mem)
	pg.mem = nil
}
