package luks2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/atrest/atrest/pkg/secret"
)

// Encryption in place (mode encrypt, direction backward, resilience
// datashift), as `cryptsetup reencrypt --encrypt --reduce-device-size`
// leaves it (docs/reencrypt.md, stage 3): the plaintext is a linear
// mapping — its first part moved to the device's end (the moved segment)
// before the header took the device's start, the rest in place — and is
// encrypted from its end backwards, each hotzone written shift bytes
// further along than it was read, so that a hotzone never overwrites its
// own source: an interrupted one is simply done again.

const (
	modeEncrypt        = "encrypt"
	resilienceShift    = "datashift"
	flagBackupMovedSeg = "backup-moved-segment"
)

// ShiftState is what a header says about an encryption in place.
type ShiftState struct {
	Keyslot int // the reencrypt keyslot
	Digest  int // the volume key's digest
	// Shift is the data shift, the most one hotzone takes.
	Shift uint64
	// DataOffset is where the encrypted data starts (backup-final).
	DataOffset uint64
	// Size is the plaintext's length (backup-previous).
	Size uint64
	// MovedOffset and MovedSize place the moved first part of the
	// plaintext (MovedSize 0 when there is none).
	MovedOffset, MovedSize uint64
	// Start is the plaintext offset from which on the data is encrypted
	// (Size when nothing is), Hotzone the length of the segment there
	// flagged in-reencryption (0 in a clean state).
	Start, Hotzone uint64
}

// Done is the number of plaintext bytes encrypted so far.
func (s *ShiftState) Done() uint64 { return s.Size - s.Start }

// EncryptionInPlace returns the state of the encryption in place the
// header records, or nil when there is none (or it is another kind of
// re-encryption). Metadata atrest cannot follow is ErrUnsupported.
func (h *Header) EncryptionInPlace() (*ShiftState, error) {
	ks := h.reencryptKeyslot()
	if ks < 0 {
		return nil, nil
	}
	k := h.Keyslots[ks]
	mode, _ := nonEmptyString(k.raw, "mode")
	dir, _ := nonEmptyString(k.raw, "direction")
	if mode != modeEncrypt {
		return nil, nil
	}
	st := &ShiftState{Keyslot: ks, Digest: -1}
	if dir != "backward" || k.Area.Type != resilienceShift {
		return nil, fmt.Errorf("%w: encryption in place with direction %q resilience %q (atrest follows backward, %s)", ErrUnsupported, dir, k.Area.Type, resilienceShift)
	}
	var err error
	if st.Shift, err = u64String(k.raw.Get("area"), "shift_size"); err != nil || st.Shift == 0 || st.Shift%4096 != 0 {
		return nil, fmt.Errorf("%w: datashift of %d bytes", ErrUnsupported, st.Shift)
	}
	prev, final, moved := h.segmentByFlag(flagBackupPrevious), h.segmentByFlag(flagBackupFinal), h.segmentByFlag(flagBackupMovedSeg)
	if prev == nil || final == nil || prev.Type != "linear" || final.Type != "crypt" || prev.Offset != 0 || prev.Dynamic {
		return nil, fmt.Errorf("%w: encryption in place without a linear backup-previous at 0 and a crypt backup-final", ErrUnsupported)
	}
	if final.Encryption != Cipher || !final.Dynamic || final.IVTweak != 0 {
		return nil, fmt.Errorf("%w: encryption in place to %q", ErrUnsupported, final.Encryption)
	}
	d := h.DigestForSegment(final.ID)
	if d == nil {
		return nil, fmt.Errorf("%w: backup-final has no key digest", ErrUnsupported)
	}
	st.Digest, st.DataOffset, st.Size, st.Start = d.ID, final.Offset, prev.Size, prev.Size
	if st.DataOffset < st.Shift {
		return nil, fmt.Errorf("%w: data offset %d below the shift %d", ErrUnsupported, st.DataOffset, st.Shift)
	}
	if moved != nil {
		if moved.Type != "linear" || moved.Dynamic {
			return nil, fmt.Errorf("%w: moved segment of type %q", ErrUnsupported, moved.Type)
		}
		st.MovedOffset, st.MovedSize = moved.Offset, moved.Size
	}
	// The regular segments map the plaintext in order: linear parts, then
	// perhaps the hotzone, then the part done.
	var pos uint64
	crypt := false
	for _, s := range h.regularSegments() {
		size := s.Size
		if s.Dynamic {
			size = st.Size - pos
		}
		switch s.Type {
		case "linear":
			if crypt {
				return nil, fmt.Errorf("%w: a linear segment after a crypt one", ErrUnsupported)
			}
			want := pos // in place
			if pos < st.MovedSize {
				want = st.MovedOffset + pos
			}
			if s.Offset != want {
				return nil, fmt.Errorf("%w: linear segment %d at %d, want %d", ErrUnsupported, s.ID, s.Offset, want)
			}
		case "crypt":
			if s.Offset != st.DataOffset+pos || s.IVTweak != pos/512 || s.Encryption != final.Encryption || s.SectorSize != final.SectorSize {
				return nil, fmt.Errorf("%w: crypt segment %d does not continue backup-final", ErrUnsupported, s.ID)
			}
			if !crypt {
				st.Start = pos
				if slices.Contains(s.Flags, flagInReencryption) {
					st.Hotzone = size
				}
			}
			crypt = true
		default:
			return nil, fmt.Errorf("%w: segment type %q", ErrUnsupported, s.Type)
		}
		pos += size
	}
	if pos != st.Size {
		return nil, fmt.Errorf("%w: the segments map %d of %d plaintext bytes", ErrUnsupported, pos, st.Size)
	}
	return st, nil
}

// shiftDigestData is what the reencrypt digest of an encryption in place
// covers (cryptsetup's reencrypt_assembly_verification_data): 'v', '2',
// the new key (there is no old one), the keyslot's mode, direction, area
// type, offset, size and shift_size, then backup-previous, backup-final
// and backup-moved-segment, a linear segment as type, offset and size.
func (h *Header) shiftDigestData(st *ShiftState, vk *secret.Key) (*secret.Key, error) {
	k := h.Keyslots[st.Keyslot]
	var meta []byte
	meta = append(meta, modeEncrypt...)
	meta = append(meta, "backward"...)
	meta = append(meta, k.Area.Type...)
	meta = binary.BigEndian.AppendUint64(meta, k.Area.Offset)
	meta = binary.BigEndian.AppendUint64(meta, k.Area.Size)
	meta = binary.BigEndian.AppendUint64(meta, st.Shift)
	for _, flag := range []string{flagBackupPrevious, flagBackupFinal, flagBackupMovedSeg} {
		s := h.segmentByFlag(flag)
		if s == nil {
			continue
		}
		meta = append(meta, s.Type...)
		meta = binary.BigEndian.AppendUint64(meta, s.Offset)
		if s.Dynamic {
			meta = append(meta, "dynamic"...)
		} else {
			meta = binary.BigEndian.AppendUint64(meta, s.Size)
		}
		if s.Type == "crypt" {
			meta = binary.BigEndian.AppendUint64(meta, s.IVTweak)
			meta = append(meta, s.Encryption...)
			meta = binary.BigEndian.AppendUint32(meta, s.SectorSize)
		}
	}
	data, err := secret.New(2 + vk.Len() + len(meta))
	if err != nil {
		return nil, err
	}
	b := data.Bytes()[:0]
	b = append(b, 'v', byte('0'+reencryptVersion))
	b = append(b, vk.Bytes()...)
	_ = append(b, meta...)
	return data, nil
}

// OpenEncryptKey unlocks the volume key of an encryption in place with
// passphrase and checks it against its digest and the reencrypt digest.
// The caller wipes it.
func (h *Header) OpenEncryptKey(dev Reader, passphrase *secret.Key) (*secret.Key, error) {
	st, err := h.EncryptionInPlace()
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, errors.New("luks2: no encryption in place under way")
	}
	d := h.Digests[st.Digest]
	for _, id := range h.KeyslotIDs() {
		k := h.Keyslots[id]
		if k.Type != "luks2" || !slices.Contains(d.Keyslots, id) {
			continue
		}
		vk, err := h.unsealFor(dev, k, d, passphrase)
		if err != nil {
			continue
		}
		if err := h.verifyShift(st, vk); err != nil {
			vk.Wipe()
			return nil, err
		}
		return vk, nil
	}
	return nil, fmt.Errorf("%w: the passphrase opens no keyslot of the volume key", ErrKeyRejected)
}

func (h *Header) verifyShift(st *ShiftState, vk *secret.Key) error {
	data, err := h.shiftDigestData(st, vk)
	if err != nil {
		return err
	}
	defer data.Wipe()
	return h.verifyReencryptDigest(st.Keyslot, data)
}

// reencryptKeyslot is the keyslot of type reencrypt, -1 when there is none.
func (h *Header) reencryptKeyslot() int {
	ks := -1
	for _, id := range h.KeyslotIDs() {
		if h.Keyslots[id].Type == "reencrypt" {
			ks = id
		}
	}
	return ks
}

// reencUpdate starts an Update of a header under re-encryption (Begin
// refuses headers with requirements).
func reencUpdate(h *Header) *Update {
	return &Update{base: h, next: h.Clone(), pending: map[int][]byte{}}
}
