package dmcrypt

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	devmapper "github.com/anatol/devmapper.go"
	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/pkg/secret"
)

// An online re-encryption keeps the file system's device, the active
// mapping NAME, and changes what lies under it, as cryptsetup 2.6 does
// (lib/luks2/luks2_reencrypt.c):
//
//	NAME                   linear over NAME-overlay, for the whole run
//	NAME-overlay           one target per LUKS2 segment: the part done
//	                       (crypt, new key), the hotzone (crypt, new key,
//	                       over NAME-hotzone-forward), the rest (crypt, old key)
//	NAME-hotzone-forward   linear over the data area of the backing device
//
// Before a hotzone is re-encrypted the overlay gets the table with that
// hotzone and the hotzone device is suspended, so I/O to the hotzone
// waits (already encrypted with the new key) while the re-encryption
// rewrites it underneath; the hotzone device is resumed once the hotzone
// is under the new key and the header says so. At the end NAME gets the
// segments' table directly and the helpers go.

// ReencryptSegment is one part of the data area in a re-encryption: a
// LUKS2 regular segment.
type ReencryptSegment struct {
	// OffsetSectors is where the segment starts on the backing device and
	// Sectors its length, in 512-byte sectors; Sectors 0 (last segment
	// only) runs to the end of the data area.
	OffsetSectors, Sectors uint64
	// IVOffset is the segment's iv_tweak in sectors.
	IVOffset uint64
	// SectorSize is the encryption sector size (0 means 512).
	SectorSize uint32
	// Key encrypts the segment; KeyID is the LUKS2 digest id of the key,
	// which names it in the keyring (see Stack.withKeys).
	Key   *secret.Key
	KeyID int
	// Hotzone marks the segment being re-encrypted: it is reached through
	// the hotzone device.
	Hotzone bool
}

// Stack is the device-mapper stack of an online re-encryption of the
// active mapping Name.
type Stack struct {
	// Name is the active mapping (the file system's device) and UUID the
	// LUKS2 header's UUID.
	Name, UUID string
	// Backing is the device holding header and data, held open by the
	// caller.
	Backing *os.File
	// DataOffsetSectors is where the data area starts on Backing, and
	// SizeSectors its length (the active mapping's size).
	DataOffsetSectors, SizeSectors uint64
	// Flags are the active mapping's dm-crypt options, kept on every
	// crypt target.
	Flags Flag
}

// HotzoneName is the hotzone device's name, cryptsetup's for a forward
// re-encryption.
func (s *Stack) HotzoneName() string { return s.Name + "-hotzone-forward" }

// OverlayName is the overlay device's name.
func (s *Stack) OverlayName() string { return s.Name + "-overlay" }

// subdevUUID is the dm UUID cryptsetup gives its helper devices:
// CRYPT-SUBDEV-<uuid without dashes>-<device name>.
func subdevUUID(luksUUID, name string) (string, error) {
	hex, err := compactUUID(luksUUID)
	if err != nil {
		return "", err
	}
	u := "CRYPT-SUBDEV-" + hex + "-" + name
	if len(u) > maxUUIDLen {
		u = u[:maxUUIDLen]
	}
	return u, nil
}

// TargetLine is one crypt target of a table, as `dmsetup table` prints
// it (String) and as it is loaded (Table).
type TargetLine struct {
	// Start and Length are in 512-byte sectors of the mapping.
	Start, Length uint64
	// KeyRef is the key field (a keyring reference), IVOffset the IV
	// offset, Device the major:minor and Offset the sector on it.
	KeyRef     string
	IVOffset   uint64
	Device     string
	Offset     uint64
	Flags      Flag
	SectorSize uint32
}

// String is the line as the kernel prints the table.
func (l TargetLine) String() string {
	s := fmt.Sprintf("%d %d crypt %s %s %d %s %d", l.Start, l.Length, CipherAESXTSPlain64, l.KeyRef, l.IVOffset, l.Device, l.Offset)
	opts := l.Flags.Names()
	if l.SectorSize != 0 && l.SectorSize != 512 {
		opts = append(opts, "sector_size:"+strconv.Itoa(int(l.SectorSize)))
	}
	if len(opts) > 0 {
		s += " " + strconv.Itoa(len(opts)) + " " + strings.Join(opts, " ")
	}
	return s
}

// Table is the line for devmapper.Load.
func (l TargetLine) Table() devmapper.Table {
	return devmapper.CryptTable{
		Start: l.Start * 512, Length: l.Length * 512,
		BackendDevice: l.Device, BackendOffset: l.Offset * 512,
		Encryption: CipherAESXTSPlain64, KeyID: l.KeyRef, IVTweak: l.IVOffset,
		Flags: l.Flags.Names(), SectorSize: uint64(max(l.SectorSize, 512)),
	}
}

// OverlayTable is the overlay's table for segs, each crypt target's key
// named by keyRef(segment): the targets cryptsetup's
// reencrypt_make_targets builds. Segments are contiguous from sector 0; a
// hotzone segment maps onto hotzone (major:minor) at its offset within the
// data area, the others onto backing at their absolute offset.
func OverlayTable(segs []ReencryptSegment, sizeSectors, dataOffsetSectors uint64, backing, hotzone string, flags Flag, keyRef func(ReencryptSegment) string) ([]TargetLine, error) {
	var out []TargetLine
	start := uint64(0)
	for i, sg := range segs {
		n := sg.Sectors
		if n == 0 {
			if i != len(segs)-1 {
				return nil, fmt.Errorf("%w: segment %d of %d has no length", ErrInvalidParams, i, len(segs))
			}
			n = sizeSectors - start
		}
		if n == 0 || start+n > sizeSectors {
			return nil, fmt.Errorf("%w: segment %d (%d sectors at %d) outside the %d-sector data area", ErrInvalidParams, i, n, start, sizeSectors)
		}
		dev, off := backing, sg.OffsetSectors
		if sg.Hotzone {
			if hotzone == "" {
				return nil, fmt.Errorf("%w: a hotzone segment without a hotzone device", ErrInvalidParams)
			}
			dev, off = hotzone, sg.OffsetSectors-dataOffsetSectors
		}
		out = append(out, TargetLine{Start: start, Length: n, KeyRef: keyRef(sg), IVOffset: sg.IVOffset,
			Device: dev, Offset: off, Flags: flags, SectorSize: sg.SectorSize})
		start += n
	}
	if start != sizeSectors {
		return nil, fmt.Errorf("%w: segments cover %d of %d sectors", ErrInvalidParams, start, sizeSectors)
	}
	return out, nil
}

// loadLines loads lines as name's inactive table.
func loadLines(name string, lines []TargetLine) error {
	tables := make([]devmapper.Table, len(lines))
	for i, l := range lines {
		tables[i] = l.Table()
	}
	return devmapper.Load(name, 0, tables...)
}

// devno is how a table names the device f is.
func (s *Stack) devno() (string, error) {
	d, _, err := BackingDevice(s.Backing)
	return d, err
}

// deviceNumber returns major:minor of the mapping name.
func deviceNumber(name string) (string, error) {
	info, err := devmapper.InfoByName(name)
	if err != nil {
		return "", dmError("query", name, err)
	}
	return fmt.Sprintf("%d:%d", unix.Major(info.DevNo), unix.Minor(info.DevNo)), nil
}

// withKeys runs load with every distinct key of segs in the thread
// keyring (see withLogonKey) and a function naming each segment's key.
// The keys are named as cryptsetup names a LUKS2 segment's key,
// "cryptsetup:<uuid>-d<digest>": cryptsetup takes over an active device
// only when the key descriptions in its table are the ones it expects
// (crypt_compare_dm_devices), so the stack's tables, and the table a run
// leaves, are cryptsetup's to the letter.
func (s *Stack) withKeys(segs []ReencryptSegment, load func(ref func(ReencryptSegment) string) error) error {
	if _, err := compactUUID(s.UUID); err != nil {
		return err
	}
	refs := map[int]string{}
	var keys []ReencryptSegment
	for _, sg := range segs {
		if err := checkKey(sg.Key); err != nil {
			return err
		}
		if _, ok := refs[sg.KeyID]; !ok {
			refs[sg.KeyID] = ""
			keys = append(keys, sg)
		}
	}
	var nest func(i int) error
	nest = func(i int) error {
		if i == len(keys) {
			return load(func(sg ReencryptSegment) string { return refs[sg.KeyID] })
		}
		desc := fmt.Sprintf("cryptsetup:%s-d%d", s.UUID, keys[i].KeyID)
		return withLogonKey(desc, keys[i].Key, func(ref string) error {
			refs[keys[i].KeyID] = ref
			return nest(i + 1)
		})
	}
	// withLogonKey locks the OS thread; nested calls keep the same one.
	return nest(0)
}

// Build creates the hotzone and overlay devices, the overlay with the
// table of segs (the active mapping's current segments), and points Name
// at the overlay. The file system's I/O goes on throughout (the switch of
// Name's table neither freezes nor flushes it). On failure the helpers are
// removed and Name is unchanged.
func (s *Stack) Build(segs []ReencryptSegment) (err error) {
	if err := checkName(s.Name); err != nil {
		return err
	}
	backing, err := s.devno()
	if err != nil {
		return fmt.Errorf("%w: backing device: %v", ErrInvalidParams, err)
	}
	hz, ov := s.HotzoneName(), s.OverlayName()
	for _, n := range []string{hz, ov} {
		if err := checkName(n); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil {
			_ = devmapper.Remove(ov)
			_ = devmapper.Remove(hz)
		}
	}()
	hzUUID, err := subdevUUID(s.UUID, hz)
	if err != nil {
		return err
	}
	if err := devmapper.CreateAndLoad(hz, hzUUID, 0, devmapper.LinearTable{
		Length: s.SizeSectors * 512, BackendDevice: backing, BackendOffset: s.DataOffsetSectors * 512,
	}); err != nil {
		return s.stackError("create", hz, err)
	}
	hzDev, err := deviceNumber(hz)
	if err != nil {
		return err
	}
	ovUUID, err := subdevUUID(s.UUID, ov)
	if err != nil {
		return err
	}
	if err := devmapper.Create(ov, ovUUID); err != nil {
		return s.stackError("create", ov, err)
	}
	if err := s.loadOverlay(segs, backing, hzDev); err != nil {
		return err
	}
	if err := resume(ov, 0); err != nil {
		return err
	}
	ovDev, err := deviceNumber(ov)
	if err != nil {
		return err
	}
	if err := devmapper.Load(s.Name, 0, devmapper.LinearTable{Length: s.SizeSectors * 512, BackendDevice: ovDev}); err != nil {
		return loadError(s.Name, err)
	}
	return resume(s.Name, unix.DM_SKIP_LOCKFS_FLAG|unix.DM_NOFLUSH_FLAG)
}

func (s *Stack) stackError(op, name string, err error) error {
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("%w: %s exists (an earlier online re-encryption's device?)", ErrExists, name)
	}
	return dmError(op, name, err)
}

// loadOverlay loads the overlay's inactive table for segs.
func (s *Stack) loadOverlay(segs []ReencryptSegment, backing, hzDev string) error {
	return s.withKeys(segs, func(ref func(ReencryptSegment) string) error {
		lines, err := OverlayTable(segs, s.SizeSectors, s.DataOffsetSectors, backing, hzDev, s.Flags, ref)
		if err != nil {
			return err
		}
		if err := loadLines(s.OverlayName(), lines); err != nil {
			return loadError(s.OverlayName(), err)
		}
		return nil
	})
}

// Refresh loads the overlay's table for segs (which name a hotzone),
// then suspends the overlay and the hotzone device, top to bottom as
// cryptsetup does, and resumes the overlay with the new table: from then
// on I/O to the hotzone waits in the suspended hotzone device until
// ResumeHotzone.
func (s *Stack) Refresh(segs []ReencryptSegment) error {
	backing, err := s.devno()
	if err != nil {
		return err
	}
	hzDev, err := deviceNumber(s.HotzoneName())
	if err != nil {
		return err
	}
	if err := s.loadOverlay(segs, backing, hzDev); err != nil {
		return err
	}
	const quiet = unix.DM_SKIP_LOCKFS_FLAG | unix.DM_NOFLUSH_FLAG
	if err := suspend(s.OverlayName(), quiet); err != nil {
		return err
	}
	if err := suspend(s.HotzoneName(), quiet); err != nil {
		_ = resume(s.OverlayName(), 0)
		return err
	}
	return resume(s.OverlayName(), 0)
}

// ResumeHotzone lets the I/O held at the hotzone through: call it once
// the hotzone is under the new key and the header says so.
func (s *Stack) ResumeHotzone() error { return resume(s.HotzoneName(), 0) }

// Teardown gives Name the table of segs directly over the backing device
// (the single new-key segment when the re-encryption finished, done and
// rest when it stopped between hotzones) and removes the helpers. The
// hotzone device must not be holding I/O for an unfinished hotzone.
func (s *Stack) Teardown(segs []ReencryptSegment) error {
	if st, err := Inspect(s.HotzoneName()); err == nil && st.Suspended {
		if err := s.ResumeHotzone(); err != nil {
			return err
		}
	}
	backing, err := s.devno()
	if err != nil {
		return err
	}
	err = s.withKeys(segs, func(ref func(ReencryptSegment) string) error {
		lines, err := OverlayTable(segs, s.SizeSectors, s.DataOffsetSectors, backing, "", s.Flags, ref)
		if err != nil {
			return err
		}
		if err := loadLines(s.Name, lines); err != nil {
			return loadError(s.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := resume(s.Name, unix.DM_SKIP_LOCKFS_FLAG|unix.DM_NOFLUSH_FLAG); err != nil {
		return err
	}
	return s.RemoveLeftover()
}

// Leftover is what an earlier online run, killed, left of its stack.
type Leftover struct {
	// Suspended: the hotzone device holds I/O for the hotzone
	// [HotStart, HotStart+HotSectors) (sectors within the data area).
	Suspended            bool
	HotStart, HotSectors uint64
	// Flags are the dm-crypt options of the overlay's crypt targets.
	Flags Flag
}

// FindLeftover reports the stack a killed run left (nil when there is no
// overlay device): whether the hotzone device is suspended, and which
// part of the data area the overlay maps through it.
func (s *Stack) FindLeftover() (*Leftover, error) {
	if _, err := devmapper.InfoByName(s.OverlayName()); err != nil {
		if errors.Is(err, unix.ENXIO) {
			return nil, nil
		}
		return nil, dmError("query", s.OverlayName(), err)
	}
	lo := &Leftover{}
	st, err := Inspect(s.HotzoneName())
	if errors.Is(err, ErrNotFound) {
		return lo, nil
	}
	if err != nil {
		return nil, err
	}
	lo.Suspended = st.Suspended
	hz := fmt.Sprintf("%d:%d", st.Major, st.Minor)
	err = readTable(s.OverlayName(), func(t target, params []byte) error {
		if t.kind != "crypt" {
			return nil
		}
		tab, err := parseCrypt(params)
		if err != nil {
			return fmt.Errorf("dmcrypt: table of %s: %w", s.OverlayName(), err)
		}
		lo.Flags = tab.Flags
		if tab.Device == hz {
			lo.HotStart, lo.HotSectors = t.start, t.length
		}
		return nil
	})
	return lo, err
}

// RemoveLeftover removes the helper devices; nothing may be stacked on
// them any more.
func (s *Stack) RemoveLeftover() error {
	var errs []error
	for _, n := range []string{s.OverlayName(), s.HotzoneName()} {
		if err := devmapper.Remove(n); err != nil && !errors.Is(err, unix.ENXIO) {
			errs = append(errs, dmError("remove", n, err))
		}
	}
	return errors.Join(errs...)
}

// suspend suspends name with the given DM flags.
func suspend(name string, flags uint32) error {
	return suspendIoctl(name, unix.DM_SUSPEND_FLAG|flags, "suspend")
}

// resume resumes name (swapping in its inactive table, if any).
func resume(name string, flags uint32) error {
	return suspendIoctl(name, flags, "resume")
}

func suspendIoctl(name string, flags uint32, op string) error {
	f, err := os.OpenFile(controlPath, os.O_RDWR, 0)
	if err != nil {
		return dmError("open control node", "", err)
	}
	defer f.Close()
	if _, err := ioctl(f, unix.DM_DEV_SUSPEND, name, flags, 0); err != nil {
		return dmError(op, name, err)
	}
	return nil
}

// TableLines returns the live table of the mapping name, one line per target
// as `dmsetup table` prints it; a key held in the table itself (not in a
// keyring) is shown as "-".
func TableLines(name string) ([]string, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	var out []string
	err := readTable(name, func(t target, params []byte) error {
		f := strings.Fields(string(bytesWithoutKey(t.kind, params)))
		out = append(out, strings.Join(append([]string{strconv.FormatUint(t.start, 10), strconv.FormatUint(t.length, 10), t.kind}, f...), " "))
		return nil
	})
	return out, err
}

// bytesWithoutKey copies params, a crypt target's key field replaced by
// "-" unless it is a keyring reference.
func bytesWithoutKey(kind string, params []byte) []byte {
	f := bytes.Fields(params)
	if kind == "crypt" && len(f) > 1 && (len(f[1]) == 0 || f[1][0] != ':') {
		f[1] = []byte("-")
	}
	return bytes.Join(f, []byte(" "))
}

// CryptMapping describes a mapping made only of crypt targets (one for an
// ordinary volume, done and rest after an online re-encryption stopped
// between hotzones).
type CryptMapping struct {
	// Targets is the number of crypt targets and Sectors their total length.
	Targets int
	Sectors uint64
	// Flags are the first target's dm-crypt options.
	Flags Flag
}

// InspectCrypt reports the mapping name when every target of its table is
// a crypt target, and nil when one is not.
func InspectCrypt(name string) (*CryptMapping, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	m, other := &CryptMapping{}, false
	err := readTable(name, func(t target, params []byte) error {
		if t.kind != "crypt" {
			other = true
			return nil
		}
		tab, err := parseCrypt(params)
		if err != nil {
			return fmt.Errorf("dmcrypt: table of %s: %w", name, err)
		}
		if m.Targets == 0 {
			m.Flags = tab.Flags
		}
		m.Targets++
		m.Sectors += t.length
		return nil
	})
	if err != nil || other || m.Targets == 0 {
		return nil, err
	}
	return m, nil
}
