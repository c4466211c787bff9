package dmcrypt

import (
	"errors"
	"fmt"
	"os"

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
		// Resume the overlay with its old table: the new one would send
		// new-key writes to the hotzone through a device not holding them.
		_ = clearInactive(s.OverlayName())
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
