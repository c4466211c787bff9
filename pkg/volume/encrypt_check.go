package volume

import (
	"context"
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
	// ErrFSUnsupported: no file system encryption in place reads the end
	// of (encrypt_fs.go) spans the device alone.
	ErrFSUnsupported = errors.New("encryption in place handles one ext2/ext3/ext4, btrfs (one device) or XFS (internal log) file system on the whole device")
	// ErrFSTooLarge: the file system reaches into the last EncryptReduce
	// bytes; it must be shrunk first, or the device grown (*FSTooLargeError
	// says how).
	ErrFSTooLarge = errors.New("the file system leaves no room for the LUKS2 header")
)

// FSTooLargeError is ErrFSTooLarge with the sizes and the command that
// makes the room.
type FSTooLargeError struct {
	Device          string
	FS              string // the file system's type, as in EncryptPlan
	FSSize, DevSize uint64
	BlockSize       uint64
	TargetBlocks    uint64 // the largest size that fits, in file system blocks
}

func (e *FSTooLargeError) Error() string {
	return fmt.Sprintf("%s: %v: the %s is %d bytes on a %d-byte device and must end %d MiB before the device does; %s",
		e.Device, ErrFSTooLarge, e.FS, e.FSSize, e.DevSize, EncryptReduce>>20, makeRoom(e.FS, e.Device, e.FSSize, e.DevSize, e.TargetBlocks*e.BlockSize))
}

func (e *FSTooLargeError) Unwrap() error { return ErrFSTooLarge }

// EncryptPlan is a device that encryption in place accepts.
type EncryptPlan struct {
	Device     string
	DeviceSize uint64
	// FS is the file system type (ext2, ext3, ext4, btrfs, xfs) and FSSize
	// its size as its superblock says, at most DeviceSize - EncryptReduce.
	FS     string
	FSSize uint64
}

// CheckEncryptInPlace decides whether the file system on device can be
// encrypted in place, offline, reading only: the device must be unused
// (not mounted, no holder, no swap), large enough, without a LUKS header,
// and hold one file system of a type whose end it reads (ext2/3/4, btrfs,
// XFS: encrypt_fs.go) that ends at least EncryptReduce bytes before the
// device does. atrest does not shrink file systems itself
// (docs/reencrypt.md): the operator runs resize2fs or btrfs filesystem
// resize (or grows the device under an XFS), and this check reads the
// file system's own size from its superblock, so nothing that belongs to
// it lies in the room the header takes.
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
	var ext *fsExtent
	if len(found) == 1 {
		if ext, err = readFSExtent(f, found[0].Type); err != nil {
			return nil, fmt.Errorf("%s: %w", d.Path, err)
		}
	}
	if ext == nil {
		what := "no signature"
		if len(names) > 0 {
			what = strings.Join(names, "; ")
		}
		return nil, fmt.Errorf("%s: %w; found %s", d.Path, ErrFSUnsupported, what)
	}
	if d.Size < EncryptReduce+luks2.DefaultDataOffset {
		return nil, fmt.Errorf("%s: %w: %d bytes; encryption in place needs %d MiB for the header and the data shift and some data", d.Path, luks2.ErrDeviceTooSmall, d.Size, EncryptReduce>>20)
	}
	p := &EncryptPlan{Device: d.Path, DeviceSize: uint64(d.Size), FS: found[0].Type, FSSize: ext.size}
	if room := p.DeviceSize - EncryptReduce; p.FSSize > room {
		return nil, &FSTooLargeError{Device: d.Path, FS: p.FS, FSSize: p.FSSize, DevSize: p.DeviceSize, BlockSize: ext.block, TargetBlocks: room / ext.block}
	}
	return p, nil
}
