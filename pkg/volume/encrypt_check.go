package volume

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/blockdev/signature"
	"github.com/atrest/atrest/pkg/luks2"
)

// EncryptReduce is the room encryption in place needs at the end of the
// device, as `cryptsetup reencrypt --encrypt --reduce-device-size 32M`:
// the LUKS2 header takes the first 16 MiB, whose data moves to the last
// 16 MiB first (the datashift resilience moves every hotzone by 16 MiB).
const EncryptReduce = 2 * luks2.DefaultDataOffset

// The refusals of encryption in place; each leaves the device unchanged.
var (
	// ErrAlreadyLUKS: the device holds a LUKS header already (adopt it,
	// or re-encrypt it).
	ErrAlreadyLUKS = errors.New("the device already holds a LUKS header")
	// ErrFSUnsupported: no ext2/3/4 file system spans the device alone.
	ErrFSUnsupported = errors.New("encryption in place handles an ext2/ext3/ext4 file system on the whole device")
	// ErrFSTooLarge: the file system reaches into the last EncryptReduce
	// bytes; it must be shrunk first (*FSTooLargeError says how).
	ErrFSTooLarge = errors.New("the file system leaves no room for the LUKS2 header")
)

// FSTooLargeError is ErrFSTooLarge with the sizes and the command that
// makes the room.
type FSTooLargeError struct {
	Device          string
	FSSize, DevSize uint64
	BlockSize       uint64
	TargetBlocks    uint64 // the largest size that fits, in file system blocks
}

func (e *FSTooLargeError) Error() string {
	return fmt.Sprintf("%s: %v: it is %d bytes on a %d-byte device and must end %d MiB before the device does; shrink it first, unmounted: e2fsck -f %s && resize2fs %s %dK (resize2fs -P %s prints the least it can shrink to)",
		e.Device, ErrFSTooLarge, e.FSSize, e.DevSize, EncryptReduce>>20, e.Device, e.Device, e.TargetBlocks*e.BlockSize/1024, e.Device)
}

func (e *FSTooLargeError) Unwrap() error { return ErrFSTooLarge }

// EncryptPlan is a device that encryption in place accepts.
type EncryptPlan struct {
	Device     string
	DeviceSize uint64
	// FS is the file system type (ext2, ext3, ext4) and FSSize its size
	// (blocks × block size), at most DeviceSize - EncryptReduce.
	FS     string
	FSSize uint64
}

// CheckEncryptInPlace decides whether the file system on device can be
// encrypted in place, offline, reading only: the device must be unused
// (not mounted, no holder, no swap), large enough, without a LUKS header,
// and hold one ext2/3/4 file system that ends at least EncryptReduce
// bytes before the device does. atrest does not shrink file systems
// itself (docs/reencrypt.md): the operator runs resize2fs, and this check
// reads the file system's own size from its superblock, so nothing that
// belongs to it lies in the room the header takes.
func CheckEncryptInPlace(ctx context.Context, device string) (*EncryptPlan, error) {
	d, err := blockdev.Inspect(device)
	if err != nil {
		return nil, err
	}
	if err := d.CheckUnused(); err != nil {
		return nil, fmt.Errorf("encryption in place needs the device unused and unmounted: %w", err)
	}
	f, err := os.Open(d.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	found, err := signature.Probe(ctx, f, d.Size, signature.Options{SectorSize: d.LogicalSectorSize})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.Path, err)
	}
	var names []string
	for _, s := range found {
		if s.Type == "crypto_LUKS" {
			return nil, fmt.Errorf("%s: %w (LUKS%s, UUID %s): take it over with atrest adopt, or give it a new key with atrest reencrypt", d.Path, ErrAlreadyLUKS, s.Version, s.UUID)
		}
		names = append(names, s.String())
	}
	if len(found) != 1 || !strings.HasPrefix(found[0].Type, "ext") || found[0].Type == "ext4dev" {
		what := "no signature"
		if len(names) > 0 {
			what = strings.Join(names, "; ")
		}
		return nil, fmt.Errorf("%s: %w; found %s", d.Path, ErrFSUnsupported, what)
	}
	if d.Size < EncryptReduce+luks2.DefaultDataOffset {
		return nil, fmt.Errorf("%s: %w: %d bytes; encryption in place needs %d MiB for the header and the data shift and some data", d.Path, luks2.ErrDeviceTooSmall, d.Size, EncryptReduce>>20)
	}
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return nil, fmt.Errorf("%s: read the superblock: %w", d.Path, err)
	}
	bs := uint64(1024) << binary.LittleEndian.Uint32(sb[0x18:])
	blocks := uint64(binary.LittleEndian.Uint32(sb[0x4:]))
	if binary.LittleEndian.Uint32(sb[0x60:])&0x80 != 0 { // INCOMPAT_64BIT
		blocks |= uint64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
	}
	p := &EncryptPlan{Device: d.Path, DeviceSize: uint64(d.Size), FS: found[0].Type, FSSize: blocks * bs}
	if room := p.DeviceSize - EncryptReduce; p.FSSize > room {
		return nil, &FSTooLargeError{Device: d.Path, FSSize: p.FSSize, DevSize: p.DeviceSize, BlockSize: bs, TargetBlocks: room / bs}
	}
	return p, nil
}
