package dmcrypt

import (
	"os"
	"unsafe"

	devmapper "github.com/anatol/devmapper.go"
	"golang.org/x/sys/unix"
)

// A step that fails while the hotzone device holds the file system's I/O
// cannot let that I/O through: the overlay encrypted it with the new key
// for a part of the device the header does not count as re-encrypted yet.
// cryptsetup 2.6 (reencrypt_teardown_fatal, dm_error_device) then
// replaces the hotzone device's table with an error target and resumes
// it, so the held I/O and any later I/O to the hotzone fail with EIO
// instead of waiting for ever, and nothing lands out of order; the rest
// of the device keeps working. The next run takes the stack over
// (FindLeftover reports Failed; HoldHotzone).

// FailHotzone gives the hotzone device an error target over its whole
// length and resumes it: I/O held there, and all I/O to the hotzone from
// then on, fails with EIO.
func (s *Stack) FailHotzone() error {
	name := s.HotzoneName()
	if err := loadErrorTarget(name, s.SizeSectors); err != nil {
		return dmError("load error target into", name, err)
	}
	return resume(name, 0)
}

// HoldHotzone undoes FailHotzone for a run taking the stack over: the
// hotzone device gets its linear table back as the inactive table and is
// suspended, so the hotzone's I/O waits again instead of failing, until
// ResumeHotzone swaps the linear table in once the hotzone is under the
// new key and the header says so.
func (s *Stack) HoldHotzone() error {
	backing, err := s.devno()
	if err != nil {
		return err
	}
	name := s.HotzoneName()
	if err := devmapper.Load(name, 0, devmapper.LinearTable{
		Length: s.SizeSectors * 512, BackendDevice: backing, BackendOffset: s.DataOffsetSectors * 512,
	}); err != nil {
		return loadError(name, err)
	}
	return suspend(name, unix.DM_SKIP_LOCKFS_FLAG|unix.DM_NOFLUSH_FLAG)
}

// loadErrorTarget loads one error target of sectors as name's inactive
// table (devmapper.go has no error table type).
func loadErrorTarget(name string, sectors uint64) error {
	f, err := os.OpenFile(controlPath, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// One dm_target_spec and its empty parameter string, 8-byte aligned.
	spec := (unix.SizeofDmTargetSpec + 1 + 7) &^ 7
	_, err = ioctlWith(f, unix.DM_TABLE_LOAD, name, 0, spec, func(hdr *unix.DmIoctl, data []byte) {
		hdr.Target_count = 1
		ts := (*unix.DmTargetSpec)(unsafe.Pointer(&data[0]))
		ts.Sector_start, ts.Length, ts.Next = 0, sectors, uint32(spec)
		copy(ts.Target_type[:], "error")
	})
	return err
}

// clearInactive drops name's inactive table, so that a resume keeps the
// live one.
func clearInactive(name string) error {
	f, err := os.OpenFile(controlPath, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = ioctl(f, unix.DM_TABLE_CLEAR, name, 0, 0)
	return err
}
