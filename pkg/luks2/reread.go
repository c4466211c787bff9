package luks2

import (
	"bytes"
	"context"
	"io"
	"sync"
)

// Reread is Read for a device whose header h was read (or returned by
// Commit) before: when the device still holds both of h's header copies
// byte for byte and has the same size, it returns h itself, without
// parsing and validating the same bytes again (which would give the same
// header); otherwise it reads the header as Read does. A use case that
// found a header and must check, under its own lock, that nothing changed
// it since, pays a 32 KiB read and compare instead of a parse. h may be
// nil.
func Reread(ctx context.Context, dev Reader, h *Header) (*Header, error) {
	release, err := lock(ctx, dev, false)
	if err != nil {
		return nil, err
	}
	defer release()
	return reread(ctx, dev, h)
}

// reread is Reread with the lock held.
func reread(ctx context.Context, dev Reader, h *Header) (*Header, error) {
	if h != nil && h.image[0] != nil {
		if size, err := dev.Size(); err == nil && size == h.devSize && h.HeldBy(dev) {
			return h, nil
		}
	}
	return readHeader(ctx, dev)
}

// HeldBy reports whether r starts with exactly the two header copies h was
// read from or committed as: for a device of the size h was read at, that
// it reads as h; for a header backup, that it is a backup of h's header.
// It is false when h does not know its bytes (one copy was damaged or
// older when it was read, or h was made or changed in memory).
func (h *Header) HeldBy(r io.ReaderAt) bool {
	if h.image[0] == nil {
		return false
	}
	n := len(h.image[0])
	buf := imageBuf(n)
	defer imageBufs.Put(buf)
	for i, want := range h.image {
		got := (*buf)[:n]
		if _, err := r.ReadAt(got, int64(i*n)); err != nil || !bytes.Equal(got, want) {
			return false
		}
	}
	return true
}

// imageBufs recycles the buffers HeldBy reads header copies into (16 KiB
// each by default): a batch of changes compares several per volume.
var imageBufs sync.Pool

func imageBuf(n int) *[]byte {
	if b, ok := imageBufs.Get().(*[]byte); ok && cap(*b) >= n {
		return b
	}
	b := make([]byte, n)
	return &b
}

// setImage records the copies c as h's bytes on a device of size bytes,
// which Commit has just written and synced.
func (h *Header) setImage(c [2]renderedCopy, size int64) {
	for i := range c {
		h.image[i] = append(append(make([]byte, 0, h.MetadataSize), c[i].bin...), c[i].area...)
	}
	h.devSize = size
	h.readBin, h.readArea = decodeBin(h.image[0][:BinaryHeaderSize]), h.image[0][BinaryHeaderSize:]
}
