package blockdev

import (
	"errors"
	"fmt"
)

// Sentinels for what a caller branches on. Every refusal matches ErrInUse
// as well as its own sentinel; the typed errors below carry what was found.
var (
	// ErrNotFound: the path does not exist (after following symlinks).
	ErrNotFound = errors.New("no such device or file")
	// ErrUnsupported: the path is neither a block device nor a regular
	// file (a directory, a character device, a socket...).
	ErrUnsupported = errors.New("not a block device or regular file")
	// ErrReadOnly: the device or file cannot be opened for writing.
	ErrReadOnly = errors.New("read-only")

	// ErrInUse matches every refusal below.
	ErrInUse = errors.New("in use")
	// ErrMounted: a filesystem on the device is mounted (*MountedError).
	ErrMounted = errors.New("mounted")
	// ErrSwap: the device or file is active swap (*SwapError).
	ErrSwap = errors.New("in use as swap")
	// ErrHeld: another block device is stacked on it, e.g. a
	// device-mapper mapping or an md array (*HeldError).
	ErrHeld = errors.New("held by another device")
	// ErrPartitionInUse: a partition of the whole disk is in use
	// (*PartitionInUseError).
	ErrPartitionInUse = errors.New("partition in use")
	// ErrBackingInUse: a loop device reads from it and that loop device is
	// in use (*BackingInUseError).
	ErrBackingInUse = errors.New("backs a loop device in use")
	// ErrBusy: the kernel refused exclusive access, or another process
	// holds the device's lock, for a reason the checks could not name
	// (e.g. mounted in another mount namespace) (*BusyError).
	ErrBusy = errors.New("busy")
)

// MountedError: Device is mounted on MountPoint. Via names the btrfs
// filesystem when the device is one of its members and another member
// appears as the mount source.
type MountedError struct {
	Device     string
	MountPoint string
	FSType     string
	Via        string
}

func (e *MountedError) Error() string {
	where := e.MountPoint
	if where == "" {
		where = "a mount point outside this mount namespace"
	}
	if e.Via != "" {
		return fmt.Sprintf("%s is a member of %s, which is mounted on %s", e.Device, e.Via, where)
	}
	return fmt.Sprintf("%s is mounted on %s", e.Device, where)
}

// Is matches ErrMounted and ErrInUse.
func (e *MountedError) Is(target error) bool { return target == ErrMounted || target == ErrInUse }

// SwapError: Device is active swap.
type SwapError struct{ Device string }

func (e *SwapError) Error() string { return e.Device + " is in use as swap" }

// Is matches ErrSwap and ErrInUse.
func (e *SwapError) Is(target error) bool { return target == ErrSwap || target == ErrInUse }

// HeldError: Holder (e.g. /dev/dm-0) is stacked on Device. Name is the
// holder's own name where it has one (a device-mapper name such as
// luks-…); Cause says what the holder itself is used for, when known.
type HeldError struct {
	Device string
	Holder string
	Name   string
	Cause  error
}

func (e *HeldError) Error() string {
	s := e.Device + " is held by " + e.Holder
	if e.Name != "" {
		s += " (" + e.Name + ")"
	}
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

// Is matches ErrHeld and ErrInUse.
func (e *HeldError) Is(target error) bool { return target == ErrHeld || target == ErrInUse }

// PartitionInUseError: Partition of the whole disk Device is in use, for
// the reason in Cause.
type PartitionInUseError struct {
	Device    string
	Partition string
	Cause     error
}

func (e *PartitionInUseError) Error() string {
	return fmt.Sprintf("%s has a partition in use: %v", e.Device, e.Cause)
}

// Is matches ErrPartitionInUse and ErrInUse.
func (e *PartitionInUseError) Is(target error) bool {
	return target == ErrPartitionInUse || target == ErrInUse
}

// BackingInUseError: Device is the backing file or device of the loop
// device Loop, which is in use for the reason in Cause.
type BackingInUseError struct {
	Device string
	Loop   string
	Cause  error
}

func (e *BackingInUseError) Error() string {
	return fmt.Sprintf("%s is the backing file of %s, which is in use: %v", e.Device, e.Loop, e.Cause)
}

// Is matches ErrBackingInUse and ErrInUse.
func (e *BackingInUseError) Is(target error) bool {
	return target == ErrBackingInUse || target == ErrInUse
}

// BusyError: the kernel refused to open Device exclusively (Err is
// EBUSY), or another process holds its lock (Locked).
type BusyError struct {
	Device string
	Locked bool
	Err    error
}

func (e *BusyError) Error() string {
	if e.Locked {
		return e.Device + " is locked by another process (flock)"
	}
	return e.Device + " is busy: the kernel refused exclusive access (mounted in another mount namespace, or claimed by a driver)"
}

// Is matches ErrBusy and ErrInUse.
func (e *BusyError) Is(target error) bool { return target == ErrBusy || target == ErrInUse }

func (e *BusyError) Unwrap() error { return e.Err }
