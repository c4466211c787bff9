package dmcrypt

import (
	"errors"
	"fmt"
	"io"
	"os"

	devmapper "github.com/anatol/devmapper.go"
	"golang.org/x/sys/unix"
)

// Mapping is an active crypt mapping made by Open.
type Mapping struct {
	// Name is the device-mapper name.
	Name string
	// UUID is the dm UUID (CRYPT-LUKS2-...).
	UUID string
	// Path is the block device to use: /dev/mapper/Name.
	Path string
	// Major and Minor are the mapping's device number.
	Major, Minor uint32
}

// Open creates the crypt mapping p describes and returns it once
// /dev/mapper/NAME exists. On any failure nothing is left behind: no
// mapping, no key in a keyring. Errors wrap ErrInvalidParams,
// ErrKeyRejected, ErrExists or ErrNoDeviceMapper where those apply.
// Open does not wipe p.Key.
func Open(p Params) (*Mapping, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	f, closeBacking, err := p.backingFile()
	if err != nil {
		return nil, err
	}
	defer closeBacking()
	backing, size, err := p.measure(f)
	if err != nil {
		return nil, err
	}
	uuid, err := DMUUID(p.UUID, p.Name)
	if err != nil {
		return nil, err
	}
	if err := Available(); err != nil {
		return nil, err
	}
	if err := devmapper.Create(p.Name, uuid); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("%w: a mapping named %q or with dm UUID %s is active", ErrExists, p.Name, uuid)
		}
		return nil, dmError("create", p.Name, err)
	}
	var flags uint32
	if p.ReadOnly {
		flags = devmapper.ReadOnlyFlag
	}
	// The table claims the backing device; udev must not re-read its
	// disk's partition table (a momentary exclusive claim) meanwhile.
	unlock, err := lockBacking(f)
	if err != nil {
		_ = devmapper.Remove(p.Name)
		return nil, err
	}
	err = withLogonKey(keyDescPrefix+uuid, p.Key, func(ref string) error {
		return devmapper.Load(p.Name, flags, devmapper.CryptTable{
			Length:        size * 512,
			BackendDevice: backing,
			BackendOffset: p.OffsetSectors * 512,
			Encryption:    CipherAESXTSPlain64,
			KeyID:         ref,
			Flags:         p.Flags.Names(),
			SectorSize:    uint64(p.sectorSize()),
		})
	})
	unlock()
	if err == nil {
		err = devmapper.Resume(p.Name)
	}
	if err != nil {
		_ = devmapper.Remove(p.Name)
		return nil, loadError(p.Name, err)
	}
	info, err := devmapper.InfoByName(p.Name)
	if err != nil {
		_ = devmapper.Remove(p.Name)
		return nil, dmError("query", p.Name, err)
	}
	m := &Mapping{Name: p.Name, UUID: uuid, Path: NodePath(p.Name),
		Major: unix.Major(info.DevNo), Minor: unix.Minor(info.DevNo)}
	if err := ensureNode(m); err != nil {
		_ = devmapper.Remove(p.Name)
		return nil, err
	}
	return m, nil
}

// loadError explains a failed table load. The kernel gives only an errno;
// its reason is in the kernel log.
func loadError(name string, err error) error {
	switch {
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("dmcrypt: the kernel refused the crypt table of %s (its reason is in dmesg): %w", name, errnoOf(err))
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%w: %s (mounted, or mapped already?): %w", ErrBackingBusy, name, errnoOf(err))
	case errors.Is(err, unix.EACCES) || errors.Is(err, unix.EROFS):
		return fmt.Errorf("dmcrypt: the backing device of %s is read-only; map it read-only: %w", name, errnoOf(err))
	case errors.Is(err, unix.ENOKEY) || errors.Is(err, unix.EKEYREJECTED):
		return fmt.Errorf("%w: the kernel could not use the key for %s: %v", ErrKeyRejected, name, errnoOf(err))
	}
	return dmError("load table of", name, err)
}

// backing names the backing device for the table, "major:minor" of one
// open file (p.Backing, or p.Device opened once), and returns the mapping
// length in 512-byte sectors, measuring that same device when
// p.SizeSectors is 0, checked against the device and the sector size.
func (p *Params) backing() (string, uint64, error) {
	f, closeBacking, err := p.backingFile()
	if err != nil {
		return "", 0, err
	}
	defer closeBacking()
	return p.measure(f)
}

// backingFile is p.Backing, or p.Device opened read-only, and what to call
// when done with it.
func (p *Params) backingFile() (*os.File, func(), error) {
	if p.Backing != nil {
		return p.Backing, func() {}, nil
	}
	f, err := os.Open(p.Device)
	if err != nil {
		return nil, nil, fmt.Errorf("dmcrypt: backing device: %w", err)
	}
	return f, func() { f.Close() }, nil
}

// measure is backing's work on an open f.
func (p *Params) measure(f *os.File) (string, uint64, error) {
	devno, devBytes, err := BackingDevice(f)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s: %v", ErrInvalidParams, p.Device, err)
	}
	size, err := p.size(devBytes / 512)
	return devno, size, err
}

// BackingDevice returns how a table names the block device f is,
// "major:minor" from fstat, and its size in bytes, measured through f.
func BackingDevice(f *os.File) (devno string, size uint64, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", 0, errors.New("not a block device")
	}
	// Seeking to the end of a block device yields its size in bytes; the
	// file offset is not used otherwise (every read is positioned).
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", 0, fmt.Errorf("size: %w", err)
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)), uint64(end), nil
}

// size checks the mapping length against a device of devSectors and the
// sector size; 0 maps everything from the offset to the end.
func (p *Params) size(devSectors uint64) (uint64, error) {
	if p.OffsetSectors >= devSectors {
		return 0, fmt.Errorf("%w: data offset %d sectors is past the end of %s (%d sectors)", ErrInvalidParams, p.OffsetSectors, p.Device, devSectors)
	}
	size := p.SizeSectors
	if size == 0 {
		size = devSectors - p.OffsetSectors
	}
	if p.OffsetSectors+size > devSectors {
		return 0, fmt.Errorf("%w: %d sectors at offset %d do not fit in %s (%d sectors)", ErrInvalidParams, size, p.OffsetSectors, p.Device, devSectors)
	}
	if per := uint64(p.sectorSize() / 512); size%per != 0 {
		return 0, fmt.Errorf("%w: size %d sectors is not a multiple of the %d-byte encryption sector", ErrInvalidParams, size, p.sectorSize())
	}
	return size, nil
}
