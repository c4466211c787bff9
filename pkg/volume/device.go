package volume

import (
	"context"
	"fmt"
	"os"

	"github.com/atrest/atrest/pkg/loop"
	"github.com/atrest/atrest/pkg/luks2"
)

// fileDevice adapts a device opened elsewhere (the preflight's exclusive
// handle) to luks2.Device.
type fileDevice struct {
	*os.File
	size int64
}

func (d fileDevice) Size() (int64, error) { return d.size, nil }

// openDevice opens the volume's device for header changes.
func openDevice(path string) (*luks2.File, error) {
	f, err := luks2.OpenFile(path, true)
	if err != nil {
		return nil, fmt.Errorf("open %s for writing: %w", path, err)
	}
	return f, nil
}

// openReader opens the volume's device read-only.
func openReader(path string) (*luks2.File, error) {
	return luks2.OpenFile(path, false)
}

// blockDevice returns a block device for path: path itself, or a loop
// device attached to it when path is an image file (as cryptsetup does).
// The loop device detaches itself once the mapping on it is removed.
func blockDevice(_ context.Context, path string) (dev string, release func(), err error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", nil, err
	}
	if st.Mode()&os.ModeDevice != 0 {
		return path, func() {}, nil
	}
	l, err := loop.Attach(path, loop.Options{})
	if err != nil {
		return "", nil, fmt.Errorf("attach %s to a loop device: %w", path, err)
	}
	// Detach while the mapping holds the loop device only marks it for
	// autoclear: the kernel detaches it when the mapping lets go.
	return l.Path, func() { _ = l.Detach() }, nil
}
