// Package dmcrypt creates, inspects and removes dm-crypt mappings through
// the device-mapper ioctls, without the cryptsetup binary.
//
// The volume key never appears in the device-mapper table: Open hands it to
// the kernel as a logon key in the calling thread's keyring, the table only
// names that key (":64:logon:atrest:<dm uuid>"), and the key is revoked and
// unlinked as soon as dm-crypt has copied it, the way cryptsetup does. So
// `dmsetup table --showkeys` shows a key description, never key bytes.
//
// Mappings carry the dm UUID "CRYPT-LUKS2-<uuid without dashes>-<name>", so
// lsblk, `cryptsetup status` and systemd recognise them as LUKS2 volumes.
//
// What "wrong key" means here: dm-crypt maps any key of a usable size, and
// a key of the right size but the wrong value yields a mapping that reads
// garbage. Recognising the right key is the LUKS2 layer's job (the keyslot
// digest), done before Open is called. This package rejects, with
// ErrKeyRejected and without creating a mapping, every key that cannot be a
// key for the requested cipher: a wiped key, a key of the wrong length, an
// XTS key whose two halves are equal (an all-zero key, for instance), and
// any key the kernel refuses.
package dmcrypt

import (
	"errors"
	"fmt"
	"os"
	"strings"

	devmapper "github.com/anatol/devmapper.go"
	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/pkg/secret"
)

// CipherAESXTSPlain64 is the one cipher atrest maps (LUKS2's default).
const CipherAESXTSPlain64 = "aes-xts-plain64"

// controlPath is the device-mapper control node.
const controlPath = "/dev/mapper/control"

var (
	// ErrNoDeviceMapper means this kernel offers no device-mapper: the
	// control node is missing or refuses to open (ENODEV on kernels built
	// without it), or does not answer the version ioctl.
	ErrNoDeviceMapper = errors.New("dmcrypt: this kernel has no device-mapper (dm-mod not built in or loaded)")
	// ErrInvalidParams means Params failed validation; nothing was created.
	ErrInvalidParams = errors.New("dmcrypt: invalid mapping parameters")
	// ErrKeyRejected means the key cannot be a key for the cipher (see the
	// package doc); no mapping was created.
	ErrKeyRejected = errors.New("dmcrypt: key rejected")
	// ErrExists means a mapping with that name or dm UUID already exists.
	ErrExists = errors.New("dmcrypt: mapping already exists")
	// ErrNotFound means there is no mapping with that name.
	ErrNotFound = errors.New("dmcrypt: no such mapping")
	// ErrBusy means the mapping is in use (mounted, held open or stacked
	// under another device); errors carrying it are *BusyError.
	ErrBusy = errors.New("dmcrypt: mapping is in use")
	// ErrBackingBusy means the kernel refused the crypt table because
	// something else holds the backing device exclusively (a mount, swap,
	// another stacked device, a partition table re-read that did not
	// follow the lock convention); no mapping was created.
	ErrBackingBusy = errors.New("dmcrypt: the backing device is held exclusively")
	// ErrNoNode means the mapping was made but /dev/mapper/NAME could not
	// be (udev did not make it in time and atrest may not: atrestd's unit
	// has no CAP_MKNOD); Open removed the mapping again.
	ErrNoNode = errors.New("dmcrypt: no /dev/mapper node for the mapping")
)

// Flag is a set of dm-crypt performance and discard options.
type Flag uint8

const (
	// AllowDiscards passes discards (TRIM) to the backing device.
	AllowDiscards Flag = 1 << iota
	// NoReadWorkqueue decrypts reads in the submitting context; faster on
	// SSD and NVMe.
	NoReadWorkqueue
	// NoWriteWorkqueue encrypts writes in the submitting context.
	NoWriteWorkqueue
)

// flagNames are dm-crypt's option names, in the order cryptsetup writes them.
var flagNames = []struct {
	f    Flag
	name string
}{
	{AllowDiscards, "allow_discards"},
	{NoReadWorkqueue, "no_read_workqueue"},
	{NoWriteWorkqueue, "no_write_workqueue"},
}

// Names returns the dm-crypt option names of the set flags.
func (f Flag) Names() []string {
	var out []string
	for _, n := range flagNames {
		if f&n.f != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

// String lists the set flags, comma-separated.
func (f Flag) String() string { return strings.Join(f.Names(), ",") }

// Params describe a crypt mapping to create.
type Params struct {
	// Name is the mapping's name: /dev/mapper/Name.
	Name string
	// UUID is the LUKS2 header's UUID (with or without dashes); it builds
	// the dm UUID CRYPT-LUKS2-<uuid without dashes>-<Name>.
	UUID string
	// Device is the backing block device holding the ciphertext, as the
	// caller names it (messages use it).
	Device string
	// Backing, when set, is the backing block device held open by the
	// caller (Device is then only its name). Either way the table names
	// the device by the major:minor of one open file (fstat st_rdev), never
	// by path, so a path swapped after the caller checked what it opened
	// cannot make the mapping use another device. Open neither keeps nor
	// closes Backing.
	Backing *os.File
	// OffsetSectors is where the data segment starts on Device, in
	// 512-byte sectors (LUKS2 segment offset / 512).
	OffsetSectors uint64
	// SizeSectors is the mapping's length in 512-byte sectors; 0 maps
	// everything from the offset to the end of Device (LUKS2 "dynamic").
	SizeSectors uint64
	// Cipher is the dm-crypt cipher spec; empty means aes-xts-plain64,
	// the only one accepted.
	Cipher string
	// Key is the volume key. Open neither keeps nor wipes it: the caller
	// owns it and wipes it.
	Key *secret.Key
	// SectorSize is the encryption sector size in bytes: 512, 1024, 2048
	// or 4096; 0 means 512.
	SectorSize uint32
	// Flags are dm-crypt options.
	Flags Flag
	// ReadOnly maps the volume read-only.
	ReadOnly bool
}

// Available reports whether this kernel has a usable device-mapper, with
// a real open and version ioctl: on kernels without it the control node may
// still exist and fail only when opened. The error wraps ErrNoDeviceMapper
// and reads as one line.
func Available() error { return available(controlPath) }

func available(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) || errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: open %s: %v", ErrNoDeviceMapper, path, errnoOf(err))
		}
		return fmt.Errorf("dmcrypt: open %s: %w", path, err)
	}
	defer f.Close()
	if _, err := ioctl(f, unix.DM_VERSION, "", 0, 0); err != nil {
		return fmt.Errorf("%w: version ioctl on %s: %v", ErrNoDeviceMapper, path, errnoOf(err))
	}
	return nil
}

// errnoOf reduces err to its errno text when it has one, so that one-line
// messages do not repeat the path.
func errnoOf(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// Version returns the kernel's device-mapper ioctl interface version.
func Version() (string, error) {
	major, minor, patch, err := devmapper.GetVersion()
	if err != nil {
		return "", dmError("version", "", err)
	}
	return fmt.Sprintf("%d.%d.%d", major, minor, patch), nil
}

// dmError turns an ioctl failure into this package's errors.
func dmError(op, name string, err error) error {
	switch {
	case errors.Is(err, unix.ENODEV) || errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s: %v", ErrNoDeviceMapper, op, errnoOf(err))
	case errors.Is(err, unix.ENXIO):
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if name != "" {
		return fmt.Errorf("dmcrypt: %s %s: %w", op, name, errnoOf(err))
	}
	return fmt.Errorf("dmcrypt: %s: %w", op, errnoOf(err))
}
