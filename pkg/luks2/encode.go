package luks2

import (
	"encoding/base64"
	"maps"
	"slices"
	"strconv"

	"github.com/atrest/atrest/pkg/luks2/internal/ojson"
	"github.com/atrest/atrest/pkg/luks2/kdf"
)

// encodeJSON renders the header's JSON metadata. Known fields are written
// from the typed values (in cryptsetup's order for new objects, in place for
// existing ones); every other member is kept as read.
func (h *Header) encodeJSON() []byte {
	top := h.raw.Clone()
	if top == nil {
		top = ojson.NewObject()
	}
	ks := ojson.NewObject()
	for _, id := range h.KeyslotIDs() {
		ks.Set(strconv.Itoa(id), h.Keyslots[id].encode())
	}
	toks := ojson.NewObject()
	for _, id := range h.TokenIDs() {
		toks.Set(strconv.Itoa(id), h.Tokens[id].encode())
	}
	segs := ojson.NewObject()
	for _, id := range slices.Sorted(maps.Keys(h.Segments)) {
		segs.Set(strconv.Itoa(id), h.Segments[id].encode())
	}
	digs := ojson.NewObject()
	for _, d := range h.sortedDigests() {
		digs.Set(strconv.Itoa(d.ID), d.encode())
	}
	top.Set("keyslots", ks)
	top.Set("tokens", toks)
	top.Set("segments", segs)
	top.Set("digests", digs)
	top.Set("config", h.Config.encode())
	return ojson.Marshal(top)
}

func objectOf(raw *ojson.Value) *ojson.Value {
	if raw == nil {
		return ojson.NewObject()
	}
	return raw.Clone()
}

func (k *Keyslot) encode() *ojson.Value {
	v := objectOf(k.raw)
	v.Set("type", ojson.Str(k.Type))
	v.Set("key_size", ojson.Uint(uint64(k.KeySize)))
	if k.Type == "luks2" {
		af := objectOf(k.raw.Get("af"))
		af.Set("type", ojson.Str(k.AF.Type))
		af.Set("stripes", ojson.Uint(uint64(k.AF.Stripes)))
		af.Set("hash", ojson.Str(k.AF.Hash))
		v.Set("af", af)
	}
	area := objectOf(k.raw.Get("area"))
	area.Set("type", ojson.Str(k.Area.Type))
	area.Set("offset", ojson.Str(strconv.FormatUint(k.Area.Offset, 10)))
	area.Set("size", ojson.Str(strconv.FormatUint(k.Area.Size, 10)))
	if k.Type == "luks2" {
		area.Set("encryption", ojson.Str(k.Area.Encryption))
		area.Set("key_size", ojson.Uint(uint64(k.Area.KeySize)))
	}
	v.Set("area", area)
	if k.Type == "luks2" {
		v.Set("kdf", encodeKDF(k.KDF, k.raw.Get("kdf")))
	}
	if k.Priority == PriorityNormal {
		v.Delete("priority")
	} else {
		v.Set("priority", ojson.Uint(uint64(k.Priority)))
	}
	return v
}

// encodeKDF writes exactly the members cryptsetup allows for the KDF type
// (its keyslot repair drops leftovers of a previous type); unknown KDF
// types are kept as read.
func encodeKDF(p kdf.Params, raw *ojson.Value) *ojson.Value {
	switch p.Type {
	case kdf.PBKDF2, kdf.Argon2i, kdf.Argon2id:
	default:
		return objectOf(raw)
	}
	v := ojson.NewObject()
	v.Set("type", ojson.Str(string(p.Type)))
	if p.Type == kdf.PBKDF2 {
		v.Set("hash", ojson.Str(p.Hash))
		v.Set("iterations", ojson.Uint(uint64(p.Iterations)))
	} else {
		v.Set("time", ojson.Uint(uint64(p.Time)))
		v.Set("memory", ojson.Uint(uint64(p.Memory)))
		v.Set("cpus", ojson.Uint(uint64(p.CPUs)))
	}
	if p.Salt != nil {
		v.Set("salt", ojson.Str(base64.StdEncoding.EncodeToString(p.Salt)))
	} else if s := raw.Get("salt"); s != nil {
		v.Set("salt", s.Clone())
	}
	return v
}

func (s *Segment) encode() *ojson.Value {
	v := objectOf(s.raw)
	v.Set("type", ojson.Str(s.Type))
	v.Set("offset", ojson.Str(strconv.FormatUint(s.Offset, 10)))
	if s.Dynamic {
		v.Set("size", ojson.Str("dynamic"))
	} else {
		v.Set("size", ojson.Str(strconv.FormatUint(s.Size, 10)))
	}
	if s.Type == "crypt" {
		v.Set("iv_tweak", ojson.Str(strconv.FormatUint(s.IVTweak, 10)))
		v.Set("encryption", ojson.Str(s.Encryption))
		v.Set("sector_size", ojson.Uint(uint64(s.SectorSize)))
	}
	if s.Flags != nil {
		v.Set("flags", stringsValue(s.Flags))
	}
	return v
}

func (d *Digest) encode() *ojson.Value {
	v := objectOf(d.raw)
	v.Set("type", ojson.Str(d.Type))
	v.Set("keyslots", slotArray(d.Keyslots))
	v.Set("segments", slotArray(d.Segments))
	// Fields that did not decode are kept as read.
	if d.Type == "pbkdf2" && d.Hash != "" && d.Iterations > 0 && d.Salt != nil && d.Value != nil {
		v.Set("hash", ojson.Str(d.Hash))
		v.Set("iterations", ojson.Uint(uint64(d.Iterations)))
		v.Set("salt", ojson.Str(base64.StdEncoding.EncodeToString(d.Salt)))
		v.Set("digest", ojson.Str(base64.StdEncoding.EncodeToString(d.Value)))
	}
	return v
}

func (c *Config) encode() *ojson.Value {
	v := objectOf(c.raw)
	v.Set("json_size", ojson.Str(strconv.FormatUint(c.JSONSize, 10)))
	v.Set("keyslots_size", ojson.Str(strconv.FormatUint(c.KeyslotsSize, 10)))
	if len(c.Flags) > 0 {
		v.Set("flags", stringsValue(c.Flags))
	} else {
		v.Delete("flags")
	}
	// Requirements change only when a reencryption starts or ends; an
	// empty list read from a header is kept as it was.
	if len(c.Requirements) > 0 {
		r := objectOf(c.raw.Get("requirements"))
		r.Set("mandatory", stringsValue(c.Requirements))
		v.Set("requirements", r)
	} else if r := c.raw.Get("requirements"); r != nil && r.Get("mandatory") != nil && len(r.Get("mandatory").Elems) > 0 {
		v.Delete("requirements")
	}
	return v
}
