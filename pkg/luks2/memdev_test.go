package luks2

import (
	"errors"
	"io"
	"sync"
)

const memPage = 4096

// memDevice is an in-memory Device for unit tests. Pages are shared
// copy-on-write between snapshots, and all-zero pages are not stored, so
// that crash tests can copy a 32 MiB device cheaply.
type memDevice struct {
	mu    sync.Mutex
	size  int64
	pages map[int64]*[memPage]byte
	owned map[int64]bool
}

func newMemDevice(size int) *memDevice {
	return &memDevice{size: int64(size), pages: map[int64]*[memPage]byte{}, owned: map[int64]bool{}}
}

func (m *memDevice) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= m.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), m.size-off))
	for i := 0; i < n; {
		pg, in := (off+int64(i))/memPage, int((off+int64(i))%memPage)
		c := min(n-i, memPage-in)
		if page := m.pages[pg]; page != nil {
			copy(p[i:i+c], page[in:in+c])
		} else {
			clear(p[i : i+c])
		}
		i += c
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memDevice) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off+int64(len(p)) > m.size {
		return 0, errors.New("memdev: write past the end")
	}
	for i := 0; i < len(p); {
		pg, in := (off+int64(i))/memPage, int((off+int64(i))%memPage)
		c := min(len(p)-i, memPage-in)
		page := m.pages[pg]
		if page == nil || !m.owned[pg] {
			fresh := new([memPage]byte)
			if page != nil {
				*fresh = *page
			}
			page = fresh
			m.pages[pg] = page
			m.owned[pg] = true
		}
		copy(page[in:in+c], p[i:i+c])
		if *page == ([memPage]byte{}) {
			delete(m.pages, pg)
			delete(m.owned, pg)
		}
		i += c
	}
	return len(p), nil
}

func (m *memDevice) Sync() error { return nil }

func (m *memDevice) Size() (int64, error) { return m.size, nil }

// snapshot returns an independent copy; pages are shared until written.
func (m *memDevice) snapshot() *memDevice {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := &memDevice{size: m.size, pages: make(map[int64]*[memPage]byte, len(m.pages)), owned: map[int64]bool{}}
	for k, v := range m.pages {
		c.pages[k] = v
	}
	m.owned = map[int64]bool{}
	return c
}

// flip inverts one byte, to damage a header.
func (m *memDevice) flip(off int64) {
	var b [1]byte
	m.ReadAt(b[:], off)
	b[0] ^= 0xff
	m.WriteAt(b[:], off)
}

// bytesOf returns the device's content.
func (m *memDevice) bytesOf() []byte {
	b := make([]byte, m.size)
	m.ReadAt(b, 0)
	return b
}

// memFromBytes wraps b (a backup image) as a device.
func memFromBytes(b []byte) *memDevice {
	m := newMemDevice(len(b))
	m.WriteAt(b, 0)
	return m
}
