package luks2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/atrest/atrest/pkg/luks2/kdf"

	"github.com/atrest/atrest/pkg/luks2/internal/ojson"
	"github.com/atrest/atrest/pkg/secret"
)

// Re-encryption metadata as cryptsetup 2.6 writes it (docs/reencrypt.md):
// the online-reencrypt-v2 requirement, one keyslot of type "reencrypt"
// whose area holds the resilience data, the regular segments (done part,
// hotzone flagged in-reencryption, rest), the backup-previous and
// backup-final segments that describe the old and the new encryption, a
// digest per volume key, and the reencrypt digest that binds them.
const (
	// ReencryptRequirement is the requirement cryptsetup 2.6 writes.
	ReencryptRequirement = "online-reencrypt-v2"
	// reencryptVersion is the digit of the requirement, hashed into the
	// reencrypt digest.
	reencryptVersion = 2

	flagBackupPrevious = "backup-previous"
	flagBackupFinal    = "backup-final"
	flagBackupMoved    = "backup-moved-segment"
	flagInReencryption = "in-reencryption"

	// ResilienceChecksum: before each hotzone write, a hash of every block
	// of the old ciphertext goes to the reencrypt keyslot area; recovery
	// re-encrypts the blocks that still match.
	ResilienceChecksum = "checksum"
)

// ErrReencryptDigest means the reencrypt digest does not match the keys
// and metadata: cryptsetup refuses such a header ("Reencryption metadata
// is invalid"), and so does atrest.
var ErrReencryptDigest = errors.New("luks2: reencryption metadata is invalid (reencrypt digest mismatch)")

// ReencryptState is what a header says about a re-encryption under way.
type ReencryptState struct {
	// Keyslot is the reencrypt keyslot.
	Keyslot int
	// Mode is "reencrypt", "encrypt" or "decrypt"; Direction "forward" or
	// "backward".
	Mode, Direction string
	// Resilience is the area type ("checksum", "journal", "none",
	// "datashift"); Hash and BlockSize are the checksum parameters.
	Resilience string
	Hash       string
	BlockSize  uint32
	// OldDigest and NewDigest are the digests of the old (backup-previous)
	// and the new (backup-final) volume key.
	OldDigest, NewDigest int
	// DataOffset is where the data starts (the backup-final offset).
	DataOffset uint64
	// Done is the number of bytes, from DataOffset, re-encrypted so far.
	Done uint64
	// Hotzone is the length of the segment flagged in-reencryption: a run
	// was cut short while writing it. 0 in a clean state.
	Hotzone uint64
	// Finished: every byte is under the new key, only the metadata of the
	// re-encryption is left to remove.
	Finished bool
}

// Reencryption returns the state of the re-encryption the header records,
// or nil when there is none. A header with the requirement but metadata
// atrest cannot follow gives an error wrapping ErrUnsupported.
func (h *Header) Reencryption() (*ReencryptState, error) {
	ks := h.reencryptKeyslot()
	if ks < 0 {
		return nil, nil
	}
	k := h.Keyslots[ks]
	st := &ReencryptState{Keyslot: ks, Resilience: k.Area.Type, OldDigest: -1, NewDigest: -1}
	st.Mode, _ = nonEmptyString(k.raw, "mode")
	st.Direction, _ = nonEmptyString(k.raw, "direction")
	if area := k.raw.Get("area"); area != nil {
		st.Hash, _ = nonEmptyString(area, "hash")
		st.BlockSize, _ = u32Member(area, "sector_size")
	}
	prev, final := h.segmentByFlag(flagBackupPrevious), h.segmentByFlag(flagBackupFinal)
	if prev == nil || final == nil {
		return nil, fmt.Errorf("%w: reencryption without backup segments", ErrUnsupported)
	}
	if d := h.DigestForSegment(prev.ID); d != nil {
		st.OldDigest = d.ID
	}
	if d := h.DigestForSegment(final.ID); d != nil {
		st.NewDigest = d.ID
	}
	st.DataOffset = final.Offset
	if st.Mode != "reencrypt" || st.Direction != "forward" {
		return st, fmt.Errorf("%w: reencryption mode %q direction %q (atrest resumes mode reencrypt, direction forward)", ErrUnsupported, st.Mode, st.Direction)
	}
	if st.Resilience != ResilienceChecksum {
		return st, fmt.Errorf("%w: reencryption resilience %q (atrest resumes %q)", ErrUnsupported, st.Resilience, ResilienceChecksum)
	}
	if st.Hash != "sha256" || st.BlockSize == 0 || st.BlockSize%512 != 0 {
		return st, fmt.Errorf("%w: checksum resilience with hash %q block size %d", ErrUnsupported, st.Hash, st.BlockSize)
	}
	if st.OldDigest < 0 || st.NewDigest < 0 || st.OldDigest == st.NewDigest {
		return st, fmt.Errorf("%w: reencryption without distinct old and new key digests", ErrUnsupported)
	}
	if prev.Offset != final.Offset || h.segmentByFlag(flagBackupMoved) != nil {
		return st, fmt.Errorf("%w: reencryption with a data shift", ErrUnsupported)
	}
	regular := h.regularSegments()
	for _, s := range regular {
		if slices.Contains(s.Flags, flagInReencryption) {
			st.Done, st.Hotzone = s.Offset-st.DataOffset, s.Size
			return st, nil
		}
	}
	switch {
	case len(regular) == 1 && h.DigestForSegment(regular[0].ID) == h.Digests[st.NewDigest]:
		st.Finished = true
	case len(regular) == 1:
	case len(regular) == 2 && !regular[0].Dynamic:
		st.Done = regular[0].Size
	default:
		return st, fmt.Errorf("%w: %d regular segments in a reencryption", ErrUnsupported, len(regular))
	}
	return st, nil
}

func (h *Header) segmentByFlag(flag string) *Segment {
	for _, id := range slices.Sorted(maps.Keys(h.Segments)) {
		if slices.Contains(h.Segments[id].Flags, flag) {
			return h.Segments[id]
		}
	}
	return nil
}

func (h *Header) regularSegments() []*Segment {
	var out []*Segment
	for id := 0; id < len(h.Segments); id++ {
		if s := h.Segments[id]; s != nil && !s.isBackup() {
			out = append(out, s)
		}
	}
	return out
}

// reencryptDigestData assembles what the reencrypt digest covers, as
// cryptsetup's reencrypt_assembly_verification_data: 'v', '0'+version, the
// old key, the new key, the reencrypt keyslot's mode, direction and area
// (type, offset, size, and for checksum hash and sector size), then the
// backup-previous and backup-final segments. Strings are their bytes
// without terminator; numbers stored as strings are 64-bit big-endian,
// JSON integers 32-bit big-endian; a "dynamic" size is the word itself.
func (h *Header) reencryptDigestData(st *ReencryptState, oldVK, newVK *secret.Key) (*secret.Key, error) {
	var meta []byte
	k := h.Keyslots[st.Keyslot]
	meta = append(meta, st.Mode...)
	meta = append(meta, st.Direction...)
	meta = append(meta, k.Area.Type...)
	meta = binary.BigEndian.AppendUint64(meta, k.Area.Offset)
	meta = binary.BigEndian.AppendUint64(meta, k.Area.Size)
	switch k.Area.Type {
	case ResilienceChecksum:
		meta = append(meta, st.Hash...)
		meta = binary.BigEndian.AppendUint32(meta, st.BlockSize)
	case "none", "journal":
	default:
		return nil, fmt.Errorf("%w: reencrypt digest of resilience %q", ErrUnsupported, k.Area.Type)
	}
	for _, flag := range []string{flagBackupPrevious, flagBackupFinal} {
		s := h.segmentByFlag(flag)
		if s == nil || s.Type != "crypt" {
			return nil, fmt.Errorf("%w: %s segment is not a crypt segment", ErrUnsupported, flag)
		}
		meta = append(meta, s.Type...)
		meta = binary.BigEndian.AppendUint64(meta, s.Offset)
		if s.Dynamic {
			meta = append(meta, "dynamic"...)
		} else {
			meta = binary.BigEndian.AppendUint64(meta, s.Size)
		}
		meta = binary.BigEndian.AppendUint64(meta, s.IVTweak)
		meta = append(meta, s.Encryption...)
		meta = binary.BigEndian.AppendUint32(meta, s.SectorSize)
	}
	data, err := secret.New(2 + oldVK.Len() + newVK.Len() + len(meta))
	if err != nil {
		return nil, err
	}
	b := data.Bytes()[:0]
	b = append(b, 'v', byte('0'+reencryptVersion))
	b = append(b, oldVK.Bytes()...)
	b = append(b, newVK.Bytes()...)
	_ = append(b, meta...)
	return data, nil
}

// reencryptDigest returns the digest bound to the reencrypt keyslot.
func (h *Header) reencryptDigest(st *ReencryptState) *Digest {
	return h.DigestForKeyslot(st.Keyslot)
}

// VerifyReencrypt checks oldVK and newVK against the old and new key
// digests and the reencrypt digest against keys and metadata, as
// cryptsetup does before it resumes or recovers.
func (h *Header) VerifyReencrypt(st *ReencryptState, oldVK, newVK *secret.Key) error {
	if err := h.Digests[st.OldDigest].verify(oldVK); err != nil {
		return fmt.Errorf("old volume key: %w", err)
	}
	if err := h.Digests[st.NewDigest].verify(newVK); err != nil {
		return fmt.Errorf("new volume key: %w", err)
	}
	data, err := h.reencryptDigestData(st, oldVK, newVK)
	if err != nil {
		return err
	}
	defer data.Wipe()
	return h.verifyReencryptDigest(st.Keyslot, data)
}

// verifyReencryptDigest checks data (what the reencrypt digest covers)
// against the digest bound to the reencrypt keyslot ks.
func (h *Header) verifyReencryptDigest(ks int, data *secret.Key) error {
	d := h.DigestForKeyslot(ks)
	if d == nil {
		return fmt.Errorf("%w: no digest bound to keyslot %d", ErrReencryptDigest, ks)
	}
	if err := d.verify(data); err != nil {
		if errors.Is(err, ErrWrongVolumeKey) {
			return ErrReencryptDigest
		}
		return err
	}
	return nil
}

// ReencryptKeys are the two volume keys of a re-encryption and the
// keyslots that yielded them.
type ReencryptKeys struct {
	Old, New         *secret.Key
	OldSlot, NewSlot int
}

// Wipe wipes both keys.
func (k *ReencryptKeys) Wipe() {
	k.Old.Wipe()
	k.New.Wipe()
}

// OpenReencryptKeys unlocks, in a header under re-encryption, one keyslot
// of the old key and one of the new with the passphrases (atrest enrols
// the same platform secret under both keys; a policy volume has one
// secret for a branch of the old policy and one for a branch of the new)
// and returns both keys, checked against their digests and the reencrypt
// digest. The caller wipes them.
func (h *Header) OpenReencryptKeys(dev Reader, passphrases ...*secret.Key) (*ReencryptKeys, error) {
	st, err := h.Reencryption()
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("luks2: no reencryption under way")
	}
	keys, slots := map[int]*secret.Key{}, map[int]int{}
	for _, id := range h.KeyslotIDs() {
		k := h.Keyslots[id]
		d := h.DigestForKeyslot(id)
		if k.Type != "luks2" || d == nil || keys[d.ID] != nil || (d.ID != st.OldDigest && d.ID != st.NewDigest) {
			continue
		}
		for _, p := range passphrases {
			if vk, err := h.unsealFor(dev, k, d, p); err == nil {
				keys[d.ID], slots[d.ID] = vk, id
				break
			}
		}
	}
	rk := &ReencryptKeys{Old: keys[st.OldDigest], New: keys[st.NewDigest], OldSlot: slots[st.OldDigest], NewSlot: slots[st.NewDigest]}
	if rk.Old == nil || rk.New == nil {
		which := "new"
		if rk.Old == nil {
			which = "old"
		}
		rk.Wipe()
		return nil, fmt.Errorf("%w: the passphrase opens no keyslot of the %s volume key", ErrKeyRejected, which)
	}
	if err := h.VerifyReencrypt(st, rk.Old, rk.New); err != nil {
		rk.Wipe()
		return nil, err
	}
	return rk, nil
}

// OpenReencryptKeyslot opens keyslot id of a header under re-encryption
// with passphrase (OpenKeyslot refuses such a header): the key is checked
// against the digest the keyslot is bound to, which must be the old or
// the new volume key's; isNew says which. The caller wipes the key.
func (h *Header) OpenReencryptKeyslot(dev Reader, id int, passphrase *secret.Key) (vk *secret.Key, isNew bool, err error) {
	st, err := h.Reencryption()
	if err != nil {
		return nil, false, err
	}
	if st == nil {
		return nil, false, fmt.Errorf("luks2: no reencryption under way")
	}
	k := h.Keyslots[id]
	if k == nil || k.Type != "luks2" {
		return nil, false, fmt.Errorf("%w: %d", ErrNoSuchKeyslot, id)
	}
	d := h.DigestForKeyslot(id)
	if d == nil || (d.ID != st.OldDigest && d.ID != st.NewDigest) {
		return nil, false, fmt.Errorf("keyslot %d: %w (%w: bound to neither volume key of the re-encryption)", id, ErrKeyRejected, ErrUnboundKeyslot)
	}
	vk, err = h.unsealFor(dev, k, d, passphrase)
	if err != nil {
		if errors.Is(err, ErrWrongVolumeKey) {
			err = ErrKeyRejected
		}
		return nil, false, fmt.Errorf("keyslot %d: %w", id, err)
	}
	return vk, d.ID == st.NewDigest, nil
}

// unsealFor opens keyslot k and checks the key against digest d.
func (h *Header) unsealFor(dev Reader, k *Keyslot, d *Digest, passphrase *secret.Key) (*secret.Key, error) {
	if err := k.usable(); err != nil {
		return nil, err
	}
	work, err := secret.New(workSize(k.KeySize, k.Area.KeySize))
	if err != nil {
		return nil, err
	}
	defer work.Wipe()
	vk, err := k.unseal(dev, func(derived, scratch []byte) error {
		return kdf.DeriveTo(k.KDF, passphrase, derived, scratch)
	}, work.Bytes())
	if err != nil {
		return nil, err
	}
	if err := d.verify(vk); err != nil {
		vk.Wipe()
		return nil, err
	}
	return vk, nil
}

// reencryptKeyslotJSON is the reencrypt keyslot as cryptsetup writes it.
func reencryptKeyslotJSON(area Area, hash string, block uint32) *ojson.Value {
	a := ojson.NewObject()
	a.Set("offset", ojson.Str(fmt.Sprint(area.Offset)))
	a.Set("size", ojson.Str(fmt.Sprint(area.Size)))
	a.Set("type", ojson.Str(ResilienceChecksum))
	a.Set("hash", ojson.Str(hash))
	a.Set("sector_size", ojson.Uint(uint64(block)))
	v := ojson.NewObject()
	v.Set("area", a)
	v.Set("type", ojson.Str("reencrypt"))
	v.Set("key_size", ojson.Uint(1))
	v.Set("mode", ojson.Str("reencrypt"))
	v.Set("direction", ojson.Str("forward"))
	v.Set("priority", ojson.Uint(0))
	return v
}
