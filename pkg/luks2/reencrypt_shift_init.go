package luks2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/atrest/atrest/pkg/luks2/internal/ojson"
	"github.com/atrest/atrest/pkg/secret"
)

// BeginEncrypt starts an Update that puts a device of devSize bytes, whose
// plaintext (a file system) ends at least twice the data offset before the
// device does, into encryption in place, as `cryptsetup reencrypt
// --encrypt --init-only --reduce-device-size 32M` does with a 16 MiB
// header: the plaintext's first DataOffset bytes move to the device's
// last ones (the moved segment), the rest stays in place, and the data
// shifts by the data offset. h is a new header (New) and vk its key;
// keyslots added to the Update store vk. CommitEncrypt writes it.
func (h *Header) BeginEncrypt(vk *secret.Key, devSize uint64) (*Update, error) {
	u, err := h.Begin()
	if err != nil {
		return nil, err
	}
	seg, err := h.dataSegment()
	if err != nil {
		return nil, err
	}
	d, err := h.segmentDigest()
	if err != nil {
		return nil, err
	}
	if err := d.verify(vk); err != nil {
		return nil, fmt.Errorf("volume key: %w", err)
	}
	off := seg.Offset
	if devSize < 3*off || devSize%uint64(seg.SectorSize) != 0 {
		return nil, fmt.Errorf("%w: encryption in place of a %d-byte device needs more than %d bytes in whole sectors", ErrDeviceTooSmall, devSize, 3*off)
	}
	size, moved := devSize-2*off, devSize-off
	next := u.next
	lin := func(id int, o, s uint64, flags ...string) *Segment {
		return &Segment{ID: id, Type: "linear", Offset: o, Size: s, Flags: flags}
	}
	next.Segments = map[int]*Segment{
		0: lin(0, moved, off),
		1: lin(1, off, size-off),
		2: lin(2, moved, off, flagBackupMovedSeg),
		3: lin(3, 0, size, flagBackupPrevious),
		4: cloneSegment(seg, 4, flagBackupFinal),
	}
	next.Digests[d.ID].Segments = []int{4}
	u.reenc = &reencInit{newDigest: d.ID, newVK: vk, encrypt: devSize}
	return u, u.checkFits()
}

// encryptMarker is written after the plaintext's end, in the room the
// first hotzone will take, once the moved segment is a durable copy of
// the device's start and before the header overwrites that start: if the
// header never became valid, RecoverEncryptInit puts the start back.
var encryptMarker = []byte("atrest encrypt-in-place init v1\x00")

// CommitEncrypt copies the device's first data-offset bytes to the moved
// segment, syncs, marks the copy (its sha256), syncs, and commits the
// header with the reencrypt keyslot (datashift), the reencrypt digest and
// the requirement. A crash before the header is durable leaves the start
// of the file system damaged and the marked copy intact:
// RecoverEncryptInit restores it. From the header on, ResumeEncrypt runs
// the encryption.
func (u *Update) CommitEncrypt(ctx context.Context, dev Device) (*Header, error) {
	if u.reenc == nil || u.reenc.encrypt == 0 {
		return nil, fmt.Errorf("luks2: not an encryption update")
	}
	next := u.next
	ks, err := u.freeKeyslot(AnySlot)
	if err != nil {
		return nil, err
	}
	area, err := u.largestFreeArea()
	if err != nil {
		return nil, err
	}
	area.Size = 4096
	shift := next.segmentByFlag(flagBackupFinal).Offset
	a := ojson.NewObject()
	a.Set("offset", ojson.Str(fmt.Sprint(area.Offset)))
	a.Set("size", ojson.Str(fmt.Sprint(area.Size)))
	a.Set("type", ojson.Str(resilienceShift))
	a.Set("shift_size", ojson.Str(fmt.Sprint(shift)))
	v := ojson.NewObject()
	v.Set("area", a)
	v.Set("type", ojson.Str("reencrypt"))
	v.Set("key_size", ojson.Uint(1))
	v.Set("mode", ojson.Str(modeEncrypt))
	v.Set("direction", ojson.Str("backward"))
	v.Set("priority", ojson.Uint(0))
	next.Keyslots[ks] = &Keyslot{ID: ks, Type: "reencrypt", KeySize: 1, Priority: PriorityIgnore,
		Area: Area{Type: resilienceShift, Offset: area.Offset, Size: area.Size}, raw: v}
	next.Config.Requirements = append(next.Config.Requirements, ReencryptRequirement)
	st, err := next.EncryptionInPlace()
	if err != nil {
		return nil, err
	}
	data, err := next.shiftDigestData(st, u.reenc.newVK)
	if err != nil {
		return nil, err
	}
	defer data.Wipe()
	if err := u.addReencryptDigest(ks, data); err != nil {
		return nil, err
	}
	if size, err := dev.Size(); err != nil || uint64(size) != u.reenc.encrypt {
		return nil, fmt.Errorf("luks2: the device is not of the size the encryption was planned for (%d): %v", u.reenc.encrypt, err)
	}
	start := make([]byte, st.MovedSize)
	if _, err := dev.ReadAt(start, 0); err != nil {
		return nil, err
	}
	if _, err := dev.WriteAt(start, int64(st.MovedOffset)); err != nil {
		return nil, fmt.Errorf("luks2: copy the device's start to its end: %w", err)
	}
	if err := dev.Sync(); err != nil {
		return nil, err
	}
	if err := writeEncryptMarker(dev, st, start); err != nil {
		return nil, err
	}
	return u.Commit(ctx, dev)
}

// writeEncryptMarker writes and syncs the marker of the moved copy: the
// magic, the device size, the data offset, the copy's sha256.
func writeEncryptMarker(dev Device, st *ShiftState, moved []byte) error {
	m := make([]byte, 4096)
	copy(m, encryptMarker)
	binary.BigEndian.PutUint64(m[32:], st.MovedOffset+st.MovedSize)
	binary.BigEndian.PutUint64(m[40:], st.MovedSize)
	sum := sha256.Sum256(moved)
	copy(m[48:], sum[:])
	if _, err := dev.WriteAt(m, int64(st.Size)); err != nil {
		return fmt.Errorf("luks2: write the copy's marker: %w", err)
	}
	return dev.Sync()
}

// RecoverEncryptInit looks, on a device without a readable LUKS2 header,
// for the marker CommitEncrypt writes (dataOffset is the header size
// atrest uses). When the marker is there and the copy it describes is
// intact, the copy is written back to the device's start and synced and
// the marker erased: it returns true. Otherwise it changes nothing.
func RecoverEncryptInit(ctx context.Context, dev Device, dataOffset uint64) (bool, error) {
	if _, err := Read(ctx, dev); err == nil {
		return false, nil
	}
	size, err := dev.Size()
	if err != nil {
		return false, err
	}
	if uint64(size) < 3*dataOffset {
		return false, nil
	}
	plainEnd, moved := uint64(size)-2*dataOffset, uint64(size)-dataOffset
	m := make([]byte, 4096)
	if _, err := dev.ReadAt(m, int64(plainEnd)); err != nil {
		return false, err
	}
	if !bytes.Equal(m[:len(encryptMarker)], encryptMarker) || binary.BigEndian.Uint64(m[32:]) != uint64(size) || binary.BigEndian.Uint64(m[40:]) != dataOffset {
		return false, nil
	}
	cp := make([]byte, dataOffset)
	if _, err := dev.ReadAt(cp, int64(moved)); err != nil {
		return false, err
	}
	if sum := sha256.Sum256(cp); !bytes.Equal(sum[:], m[48:80]) {
		return false, nil
	}
	if _, err := dev.WriteAt(cp, 0); err != nil {
		return false, err
	}
	if err := dev.Sync(); err != nil {
		return false, err
	}
	if _, err := dev.WriteAt(make([]byte, 4096), int64(plainEnd)); err != nil {
		return false, err
	}
	return true, dev.Sync()
}
