package dmcrypt

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The devmapper.go library covers creating, loading, resuming, removing
// and querying a device, but not reading a table back (DM_TABLE_STATUS)
// nor probing a given control node; those two ioctls live here.

// maxIoctlBuffer bounds the output area of one ioctl.
const maxIoctlBuffer = 1 << 20

// ioctl issues one device-mapper ioctl on the control node f with extra
// bytes of output area after the header, and returns the whole buffer.
func ioctl(f *os.File, cmd uintptr, name string, flags uint32, extra int) ([]byte, error) {
	return ioctlWith(f, cmd, name, flags, extra, nil)
}

// ioctlWith is ioctl with fill, when set, called on the header and the
// extra bytes before the call (a table to load).
func ioctlWith(f *os.File, cmd uintptr, name string, flags uint32, extra int, fill func(*unix.DmIoctl, []byte)) ([]byte, error) {
	size := unix.SizeofDmIoctl + extra
	// A []uint64 backing keeps the header 8-byte aligned.
	words := make([]uint64, (size+7)/8)
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), size)
	hdr := (*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
	hdr.Version = [3]uint32{4, 0, 0}
	hdr.Data_size = uint32(size)
	hdr.Data_start = unix.SizeofDmIoctl
	hdr.Flags = flags
	copy(hdr.Name[:len(hdr.Name)-1], name)
	if fill != nil {
		fill(hdr, buf[unix.SizeofDmIoctl:])
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), cmd, uintptr(unsafe.Pointer(&buf[0])))
	runtime.KeepAlive(f)
	if errno != 0 {
		return buf, errno
	}
	return buf, nil
}

// target is one line of a device-mapper table.
type target struct {
	start, length uint64 // 512-byte sectors
	kind          string
}

// readTable reads the live table of the mapping name and calls parse with
// each target and its raw parameter bytes. The buffer, which may hold a
// hex key for mappings made without the keyring, is zeroed before
// readTable returns, so parse must not retain params.
func readTable(name string, parse func(target, []byte) error) error {
	f, err := os.OpenFile(controlPath, os.O_RDWR, 0)
	if err != nil {
		return dmError("open control node", "", err)
	}
	defer f.Close()
	for extra := 16 << 10; ; extra *= 4 {
		buf, err := ioctl(f, unix.DM_TABLE_STATUS, name, unix.DM_STATUS_TABLE_FLAG|unix.DM_SECURE_DATA_FLAG, extra)
		if err != nil {
			clear(buf)
			return dmError("read table of", name, err)
		}
		hdr := (*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
		if hdr.Flags&unix.DM_BUFFER_FULL_FLAG != 0 {
			clear(buf)
			if extra >= maxIoctlBuffer {
				return errors.New("dmcrypt: table of " + name + " is too large")
			}
			continue
		}
		err = walkTargets(buf, hdr, parse)
		clear(buf)
		return err
	}
}

// walkTargets decodes the dm_target_spec list of a DM_TABLE_STATUS answer.
// In answers, each spec's next field is an offset from the start of the
// data area, not from the spec.
func walkTargets(buf []byte, hdr *unix.DmIoctl, parse func(target, []byte) error) error {
	// A device without a live table (created, not yet loaded) answers
	// with no data area: data_size below data_start.
	if hdr.Target_count == 0 || hdr.Data_size <= hdr.Data_start || int(hdr.Data_size) > len(buf) {
		return nil
	}
	data := buf[hdr.Data_start:hdr.Data_size]
	off := uint32(0)
	for i := uint32(0); i < hdr.Target_count; i++ {
		if int(off)+unix.SizeofDmTargetSpec > len(data) {
			return errors.New("dmcrypt: truncated table answer")
		}
		spec := (*unix.DmTargetSpec)(unsafe.Pointer(&data[off]))
		params := data[int(off)+unix.SizeofDmTargetSpec:]
		if n := bytes.IndexByte(params, 0); n >= 0 {
			params = params[:n]
		}
		t := target{start: spec.Sector_start, length: spec.Length, kind: cString(spec.Target_type[:])}
		if err := parse(t, params); err != nil {
			return err
		}
		if spec.Next <= off {
			break
		}
		off = spec.Next
	}
	return nil
}

func cString(b []byte) string {
	if n := bytes.IndexByte(b, 0); n >= 0 {
		b = b[:n]
	}
	return string(b)
}
