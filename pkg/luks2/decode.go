package luks2

import (
	"fmt"
	"strings"

	"github.com/atrest/atrest/pkg/luks2/internal/ojson"
	"github.com/atrest/atrest/pkg/luks2/kdf"
)

// decodeJSON turns the JSON metadata into typed sections, checking every
// field rule of cryptsetup 2.6's LUKS2_hdr_validate. Cross-section rules
// live in validate.
func decodeJSON(h *Header, top *ojson.Value) error {
	if top.Kind != ojson.Object {
		return invalid("JSON metadata is %s", errNoObject)
	}
	h.raw = top
	steps := []struct {
		name string
		fn   func(*Header, *ojson.Value) error
	}{
		{"config", decodeConfig},
		{"keyslots", decodeKeyslots},
		{"segments", decodeSegments},
		{"digests", decodeDigests},
		{"tokens", decodeTokens},
	}
	for _, s := range steps {
		if err := s.fn(h, top); err != nil {
			return invalid("%s", err)
		}
	}
	return nil
}

func decodeConfig(h *Header, top *ojson.Value) error {
	c, err := member(top, "config", ojson.Object)
	if err != nil {
		return err
	}
	h.Config.raw = c
	if h.Config.JSONSize, err = u64String(c, "json_size"); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if h.Config.KeyslotsSize, err = u64String(c, "keyslots_size"); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if h.Config.Flags, err = stringArray(c, "flags"); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if r := c.Get("requirements"); r != nil {
		if r.Kind != ojson.Object {
			return fmt.Errorf("config: %q is %s, not an object", "requirements", r.Kind)
		}
		if h.Config.Requirements, err = stringArray(r, "mandatory"); err != nil {
			return fmt.Errorf("config requirements: %w", err)
		}
	}
	online := 0
	for _, r := range h.Config.Requirements {
		if isOnlineReencrypt(r) {
			online++
		}
	}
	if online > 1 {
		return fmt.Errorf("config: %d online reencryption requirements", online)
	}
	return nil
}

// isOnlineReencrypt matches "online-reencrypt" and "online-reencrypt-v<N>".
func isOnlineReencrypt(r string) bool {
	if r == "online-reencrypt" {
		return true
	}
	v, ok := strings.CutPrefix(r, "online-reencrypt-v")
	if !ok || v == "" {
		return false
	}
	return strings.Trim(v, "0123456789") == ""
}

func decodeKeyslots(h *Header, top *ojson.Value) error {
	s, err := section(top, "keyslots")
	if err != nil {
		return err
	}
	h.Keyslots = make(map[int]*Keyslot, len(s.Members))
	for _, m := range s.Members {
		id, _ := number(m.Key)
		k, err := decodeKeyslot(id, m.Value)
		if err != nil {
			return fmt.Errorf("keyslot %d: %w", id, err)
		}
		h.Keyslots[id] = k
	}
	return nil
}

func decodeKeyslot(id int, v *ojson.Value) (*Keyslot, error) {
	k := &Keyslot{ID: id, Priority: PriorityNormal, raw: v}
	var err error
	if k.Type, err = nonEmptyString(v, "type"); err != nil {
		return nil, err
	}
	ks, err := u32Member(v, "key_size")
	if err != nil {
		return nil, err
	}
	k.KeySize = int(ks)
	if p := v.Get("priority"); p != nil {
		n, err := intMember(v, "priority")
		if err != nil {
			return nil, err
		}
		k.Priority = Priority(n)
	}
	// Every keyslot type has an area (hdr_validate_areas).
	area, err := member(v, "area", ojson.Object)
	if err != nil {
		return nil, err
	}
	if k.Area.Type, err = nonEmptyString(area, "type"); err != nil {
		return nil, fmt.Errorf("area: %w", err)
	}
	if k.Area.Offset, err = u64String(area, "offset"); err != nil {
		return nil, fmt.Errorf("area: %w", err)
	}
	if k.Area.Size, err = u64String(area, "size"); err != nil {
		return nil, fmt.Errorf("area: %w", err)
	}
	if k.Type != "luks2" {
		return k, nil
	}
	return k, decodeLUKS2Keyslot(k, v, area)
}

// decodeLUKS2Keyslot applies luks2_keyslot_validate, after the in-memory
// repair cryptsetup runs first: KDF parameters left over from another KDF
// type are dropped.
func decodeLUKS2Keyslot(k *Keyslot, v, area *ojson.Value) error {
	kdfObj, err := member(v, "kdf", ojson.Object)
	if err != nil {
		return err
	}
	afObj, err := member(v, "af", ojson.Object)
	if err != nil {
		return err
	}
	typ, err := nonEmptyString(kdfObj, "type")
	if err != nil {
		return fmt.Errorf("kdf: %w", err)
	}
	k.KDF.Type = kdf.Type(typ)
	switch k.KDF.Type {
	case kdf.PBKDF2:
		if k.KDF.Hash, err = nonEmptyString(kdfObj, "hash"); err != nil {
			return fmt.Errorf("kdf: %w", err)
		}
		if k.KDF.Iterations, err = u32Member(kdfObj, "iterations"); err != nil {
			return fmt.Errorf("kdf: %w", err)
		}
	case kdf.Argon2i, kdf.Argon2id:
		for key, dst := range map[string]*uint32{"time": &k.KDF.Time, "memory": &k.KDF.Memory, "cpus": &k.KDF.CPUs} {
			if *dst, err = u32Member(kdfObj, key); err != nil {
				return fmt.Errorf("kdf: %w", err)
			}
		}
	}
	if k.KDF.Type == kdf.PBKDF2 || k.KDF.Type == kdf.Argon2i || k.KDF.Type == kdf.Argon2id {
		if _, err := nonEmptyString(kdfObj, "salt"); err != nil {
			return fmt.Errorf("kdf: %w", err)
		}
		// A salt that does not decode to 32 bytes only fails at unlock in
		// cryptsetup; keep it nil so opening reports it.
		if b, err := base64Member(kdfObj, "salt"); err == nil && len(b) == kdf.SaltSize {
			k.KDF.Salt = b
		}
	}
	if k.AF.Type, err = nonEmptyString(afObj, "type"); err != nil {
		return fmt.Errorf("af: %w", err)
	}
	if k.AF.Type != "luks1" {
		return fmt.Errorf("af: unknown type %q", k.AF.Type)
	}
	if k.AF.Hash, err = nonEmptyString(afObj, "hash"); err != nil {
		return fmt.Errorf("af: %w", err)
	}
	stripes, err := intMember(afObj, "stripes")
	if err != nil {
		return fmt.Errorf("af: %w", err)
	}
	k.AF.Stripes = int(max(min(stripes, 1<<30), -1))
	if k.Area.Type != "raw" {
		return fmt.Errorf("area: unknown type %q", k.Area.Type)
	}
	if k.Area.Encryption, err = nonEmptyString(area, "encryption"); err != nil {
		return fmt.Errorf("area: %w", err)
	}
	aks, err := intMember(area, "key_size")
	if err != nil {
		return fmt.Errorf("area: %w", err)
	}
	k.Area.KeySize = int(max(min(aks, 1<<20), -1))
	return nil
}

func decodeSegments(h *Header, top *ojson.Value) error {
	s, err := section(top, "segments")
	if err != nil {
		return err
	}
	if len(s.Members) == 0 {
		return fmt.Errorf("segments: empty section")
	}
	h.Segments = make(map[int]*Segment, len(s.Members))
	for _, m := range s.Members {
		id, _ := number(m.Key)
		seg, err := decodeSegment(id, m.Value)
		if err != nil {
			return fmt.Errorf("segment %d: %w", id, err)
		}
		h.Segments[id] = seg
	}
	return nil
}

func decodeSegment(id int, v *ojson.Value) (*Segment, error) {
	s := &Segment{ID: id, raw: v}
	var err error
	if s.Type, err = nonEmptyString(v, "type"); err != nil {
		return nil, err
	}
	if s.Offset, err = u64String(v, "offset"); err != nil {
		return nil, err
	}
	if size, err := nonEmptyString(v, "size"); err != nil {
		return nil, err
	} else if size == "dynamic" {
		s.Dynamic = true
	} else if s.Size, err = u64String(v, "size"); err != nil {
		return nil, err
	} else if s.Size == 0 {
		return nil, fmt.Errorf(`"size" is zero`)
	}
	if s.Offset%512 != 0 || s.Size%512 != 0 {
		return nil, fmt.Errorf("offset %d or size %d not aligned to 512 bytes", s.Offset, s.Size)
	}
	if s.Flags, err = stringArray(v, "flags"); err != nil {
		return nil, err
	}
	if s.Type != "crypt" {
		return s, nil
	}
	if s.IVTweak, err = u64String(v, "iv_tweak"); err != nil {
		return nil, err
	}
	if s.Encryption, err = nonEmptyString(v, "encryption"); err != nil {
		return nil, err
	}
	if s.SectorSize, err = u32Member(v, "sector_size"); err != nil {
		return nil, err
	}
	if s.SectorSize == 0 || s.SectorSize%512 != 0 {
		return nil, fmt.Errorf("illegal sector size %d", s.SectorSize)
	}
	if s.Size%uint64(s.SectorSize) != 0 {
		return nil, fmt.Errorf("size %d not aligned to sector size %d", s.Size, s.SectorSize)
	}
	if in := v.Get("integrity"); in != nil {
		if in.Kind != ojson.Object {
			return nil, fmt.Errorf(`"integrity" is %s, not an object`, in.Kind)
		}
		for _, k := range []string{"type", "journal_encryption", "journal_integrity"} {
			if _, err := nonEmptyString(in, k); err != nil {
				return nil, fmt.Errorf("integrity: %w", err)
			}
		}
		s.Integrity = in.Get("type").Str
	}
	return s, nil
}

// isBackup: segments flagged "backup-*" belong to a reencryption.
func (s *Segment) isBackup() bool {
	for _, f := range s.Flags {
		if strings.HasPrefix(f, "backup-") {
			return true
		}
	}
	return false
}

func decodeDigests(h *Header, top *ojson.Value) error {
	s, err := section(top, "digests")
	if err != nil {
		return err
	}
	h.Digests = make(map[int]*Digest, len(s.Members))
	for _, m := range s.Members {
		id, _ := number(m.Key)
		d := &Digest{ID: id, raw: m.Value}
		v := m.Value
		if d.Type, err = nonEmptyString(v, "type"); err != nil {
			return fmt.Errorf("digest %d: %w", id, err)
		}
		for key, dst := range map[string]*[]int{"keyslots": &d.Keyslots, "segments": &d.Segments} {
			arr, err := member(v, key, ojson.Array)
			if err != nil {
				return fmt.Errorf("digest %d: %w", id, err)
			}
			if *dst, err = slotList(arr); err != nil {
				return fmt.Errorf("digest %d: %q: %w", id, key, err)
			}
		}
		// PBKDF2 parameters are checked when a key is verified, as in
		// cryptsetup; keep what decodes.
		if hs, err := nonEmptyString(v, "hash"); err == nil {
			d.Hash = hs
		}
		if it, err := u32Member(v, "iterations"); err == nil {
			d.Iterations = it
		}
		d.Salt, _ = base64Member(v, "salt")
		d.Value, _ = base64Member(v, "digest")
		h.Digests[id] = d
	}
	return nil
}

func decodeTokens(h *Header, top *ojson.Value) error {
	s, err := section(top, "tokens")
	if err != nil {
		return err
	}
	h.Tokens = make(map[int]*Token, len(s.Members))
	for _, m := range s.Members {
		id, _ := number(m.Key)
		t, err := tokenFromJSON(m.Value)
		if err != nil {
			return fmt.Errorf("token %d: %w", id, err)
		}
		t.ID = id
		h.Tokens[id] = t
	}
	return nil
}
