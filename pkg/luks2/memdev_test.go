package luks2

import (
	"errors"
	"io"
	"sync"
)

// memDevice is an in-memory Device for unit tests.
type memDevice struct {
	mu   sync.Mutex
	data []byte
}

func newMemDevice(size int) *memDevice { return &memDevice{data: make([]byte, size)} }

func (m *memDevice) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memDevice) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off+int64(len(p)) > int64(len(m.data)) {
		return 0, errors.New("memdev: write past the end")
	}
	return copy(m.data[off:], p), nil
}

func (m *memDevice) Sync() error { return nil }

func (m *memDevice) Size() (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.data)), nil
}

func (m *memDevice) snapshot() *memDevice {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &memDevice{data: append([]byte(nil), m.data...)}
}
