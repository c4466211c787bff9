package signature

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/atrest/atrest/pkg/blockdev/overwrite"
)

// memDevice is an in-memory device whose reads can fail at one offset.
type memDevice struct {
	data     []byte
	failRead int64 // ReadAt covering this offset fails; -1 never
	writes   int
}

func (m *memDevice) ReadAt(p []byte, off int64) (int, error) {
	if m.failRead >= off && m.failRead < off+int64(len(p)) {
		return 0, errors.New("injected read error")
	}
	return bytes.NewReader(m.data).ReadAt(p, off)
}

func (m *memDevice) WriteAt(p []byte, off int64) (int, error) {
	m.writes++
	return copy(m.data[off:], p), nil
}

func (m *memDevice) Sync() error { return nil }

func luks2Image() image {
	return newImage(1<<20).luks2(0, 0, "LUKS\xba\xbe").luks2(0x4000, 0x4000, "SKUL\xba\xbe").str(0x8000, "payload")
}

func TestWipeErasesBothLUKS2Headers(t *testing.T) {
	dev := &memDevice{data: luks2Image(), failRead: -1}
	ctx := context.Background()
	sigs, err := Probe(ctx, dev, int64(len(dev.data)), Options{})
	if err != nil || len(sigs) != 1 {
		t.Fatalf("probe: %v %v", sigs, err)
	}
	var last overwrite.Progress
	if err := Wipe(ctx, dev, int64(len(dev.data)), sigs, WipeOptions{Progress: func(p overwrite.Progress) { last = p }}); err != nil {
		t.Fatal(err)
	}
	want := luks2Image()
	clear(want[0:6])
	clear(want[0x4000:0x4006])
	if !bytes.Equal(dev.data, want) {
		t.Fatal("wipe changed more or less than the two 6-byte magics")
	}
	if last.Done != 12 || last.Total != 12 {
		t.Fatalf("last progress %+v, want 12 of 12 bytes", last)
	}
}

func TestWipeRefusesAChangedDevice(t *testing.T) {
	dev := &memDevice{data: luks2Image(), failRead: -1}
	ctx := context.Background()
	sigs, _ := Probe(ctx, dev, int64(len(dev.data)), Options{})
	dev.data[0x4000] = 'X' // someone rewrote the secondary header since
	err := Wipe(ctx, dev, int64(len(dev.data)), sigs, WipeOptions{})
	if !errors.Is(err, ErrChanged) {
		t.Fatalf("got %v, want ErrChanged", err)
	}
	if dev.writes != 0 {
		t.Fatal("wrote to a device that changed since it was probed")
	}
}

func TestProbeFailsOnReadError(t *testing.T) {
	// The secondary header location cannot be read: the probe must fail
	// rather than report only the primary, so nothing acts on half an
	// answer.
	dev := &memDevice{data: luks2Image(), failRead: 0x4000}
	if sigs, err := Probe(context.Background(), dev, int64(len(dev.data)), Options{}); err == nil {
		t.Fatalf("probe succeeded with %v despite a read error", sigs)
	}
}

func TestWipeWritesNothingWhenAMagicCannotBeRead(t *testing.T) {
	good := &memDevice{data: luks2Image(), failRead: -1}
	sigs, _ := Probe(context.Background(), good, int64(len(good.data)), Options{})
	dev := &memDevice{data: luks2Image(), failRead: 0x4002}
	if err := Wipe(context.Background(), dev, int64(len(dev.data)), sigs, WipeOptions{}); err == nil {
		t.Fatal("wipe succeeded although a magic could not be re-read")
	}
	if dev.writes != 0 {
		t.Fatal("wrote before every magic was verified")
	}
}

func TestWipeRefusesMagicOutsideDevice(t *testing.T) {
	dev := &memDevice{data: newImage(4096), failRead: -1}
	sigs := []Signature{{Type: "x", Magics: []Magic{{Offset: 4094, Bytes: []byte{1, 2, 3}}}}}
	if err := Wipe(context.Background(), dev, 4096, sigs, WipeOptions{}); err == nil || dev.writes != 0 {
		t.Fatalf("got %v with %d writes, want a refusal and no write", err, dev.writes)
	}
}
