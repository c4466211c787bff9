package luks2

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// validate applies cryptsetup 2.6's cross-section rules (LUKS2_hdr_validate
// and LUKS2_keyslots_validate) to a decoded header. jsonAreaSize is the JSON
// area size the binary header implies.
func (h *Header) validate(jsonAreaSize uint64) error {
	for _, check := range []func() error{
		h.validateReferences,
		h.validateSegments,
		h.validateKeyslotDigests,
		func() error { return h.validateConfig(jsonAreaSize) },
		h.validateAreas,
	} {
		if err := check(); err != nil {
			return invalid("%s", err)
		}
	}
	return nil
}

func (h *Header) validateReferences() error {
	for _, id := range h.TokenIDs() {
		for _, ks := range h.Tokens[id].Keyslots {
			if h.Keyslots[ks] == nil {
				return fmt.Errorf("token %d refers to missing keyslot %d", id, ks)
			}
		}
	}
	for _, d := range h.sortedDigests() {
		for _, ks := range d.Keyslots {
			if h.Keyslots[ks] == nil {
				return fmt.Errorf("digest %d refers to missing keyslot %d", d.ID, ks)
			}
		}
		for _, s := range d.Segments {
			if h.Segments[s] == nil {
				return fmt.Errorf("digest %d refers to missing segment %d", d.ID, s)
			}
		}
	}
	return nil
}

// validateSegments: regular segments are numbered from 0 without gaps,
// backup segments follow them, crypt segments have a digest, and regular
// segments do not overlap (only the last may be dynamic).
func (h *Header) validateSegments() error {
	firstBackup := -1
	for id, s := range h.Segments {
		if s.isBackup() {
			if firstBackup < 0 || id < firstBackup {
				firstBackup = id
			}
		}
		if s.Type == "crypt" && h.DigestForSegment(id) == nil {
			return fmt.Errorf("crypt segment %d has no key digest", id)
		}
	}
	for id, s := range h.Segments {
		if !s.isBackup() && firstBackup >= 0 && id >= firstBackup {
			return fmt.Errorf("regular segment %d follows backup segment %d", id, firstBackup)
		}
	}
	if firstBackup == 0 {
		return errors.New("no regular segment")
	}
	count := len(h.Segments)
	if firstBackup >= count {
		return fmt.Errorf("gap before backup segment %d", firstBackup)
	}
	if firstBackup < 0 {
		firstBackup = count
	}
	for i := range count {
		if h.Segments[i] == nil {
			return fmt.Errorf("gap at segment %d", i)
		}
	}
	for i := range firstBackup {
		a := h.Segments[i]
		if a.Dynamic && i != firstBackup-1 {
			return fmt.Errorf("segment %d is dynamic but not the last regular segment", i)
		}
		for j := range firstBackup {
			b := h.Segments[j]
			if i == j {
				continue
			}
			if !b.Dynamic && b.Offset > math.MaxUint64-b.Size {
				return fmt.Errorf("segment %d offset+size overflows", j)
			}
			if a.Offset >= b.Offset && (b.Dynamic || a.Offset < b.Offset+b.Size) {
				return fmt.Errorf("segments %d and %d overlap", i, j)
			}
		}
	}
	return nil
}

func (h *Header) validateKeyslotDigests() error {
	reencrypt := 0
	for _, id := range h.KeyslotIDs() {
		k := h.Keyslots[id]
		switch k.Type {
		case "luks2":
			n := 0
			for _, d := range h.Digests {
				if slices.Contains(d.Keyslots, id) {
					n++
				}
			}
			if n != 1 {
				return fmt.Errorf("keyslot %d is assigned to %d digests, not exactly one", id, n)
			}
		case "reencrypt":
			reencrypt++
		}
	}
	online := false
	for _, r := range h.Config.Requirements {
		// The requirement names cryptsetup 2.6 knows as online reencryption.
		online = online || r == "online-reencrypt" || r == "online-reencrypt-v2" || r == "online-reencrypt-v3"
	}
	switch {
	case online && reencrypt == 0:
		return errors.New("online reencryption requirement without a reencryption keyslot")
	case reencrypt > 0 && !online:
		return errors.New("reencryption keyslot without the reencryption requirement")
	case reencrypt > 1:
		return errors.New("more than one reencryption keyslot")
	}
	return nil
}

func (h *Header) validateConfig(jsonAreaSize uint64) error {
	c := &h.Config
	if c.JSONSize > math.MaxUint64-BinaryHeaderSize || !validMetadataSize(c.JSONSize+BinaryHeaderSize) {
		return fmt.Errorf("config: unsupported metadata size (json_size %d)", c.JSONSize)
	}
	if c.KeyslotsSize%4096 != 0 || c.KeyslotsSize > MaxKeyslotsSize {
		return fmt.Errorf("config: keyslots_size %d not 4 KiB aligned or above %d", c.KeyslotsSize, MaxKeyslotsSize)
	}
	meta := c.JSONSize + BinaryHeaderSize
	if off := h.minSegmentOffset(); off != 0 && (off < c.KeyslotsSize || off-c.KeyslotsSize < 2*meta) {
		return fmt.Errorf("config: keyslots area (%d bytes after %d) runs into the data at offset %d", c.KeyslotsSize, 2*meta, off)
	}
	if c.JSONSize != jsonAreaSize {
		return fmt.Errorf("config: json_size %d differs from the binary header's JSON area %d", c.JSONSize, jsonAreaSize)
	}
	return nil
}

// minSegmentOffset is the lowest offset of a regular segment; 0 means a
// segment starts at 0 (detached header).
func (h *Header) minSegmentOffset() uint64 {
	lowest := uint64(math.MaxUint64)
	for _, s := range h.Segments {
		if s.isBackup() {
			continue
		}
		lowest = min(lowest, s.Offset)
	}
	return lowest
}

// validateAreas: keyslot areas lie inside the keyslots area and do not
// overlap each other.
func (h *Header) validateAreas() error {
	meta := h.Config.JSONSize + BinaryHeaderSize
	end := h.AreasEnd()
	ids := h.KeyslotIDs()
	for _, i := range ids {
		a := h.Keyslots[i].Area
		if a.Offset < 2*meta {
			return fmt.Errorf("keyslot %d area offset %d lies in the header copies", i, a.Offset)
		}
		if a.Size == 0 {
			return fmt.Errorf("keyslot %d area is empty", i)
		}
		if a.Offset > math.MaxUint64-a.Size {
			return fmt.Errorf("keyslot %d area offset+size overflows", i)
		}
		if a.Offset+a.Size > end {
			return fmt.Errorf("keyslot %d area [%d, %d) runs past the keyslots area end %d", i, a.Offset, a.Offset+a.Size, end)
		}
		for _, j := range ids {
			b := h.Keyslots[j].Area
			if i != j && a.Offset >= b.Offset && a.Offset-b.Offset < b.Size {
				return fmt.Errorf("keyslot %d area overlaps keyslot %d area", i, j)
			}
		}
	}
	return nil
}
