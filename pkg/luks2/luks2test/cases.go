package luks2test

import (
	"encoding/json"
	"strconv"
)

// Case is one header mutation with cryptsetup 2.6's verdict. The base image
// has keyslots 0 and 1 (luks2, pbkdf2), segment 0 and digest 0, a 16 KiB
// metadata area and the default keyslots area.
type Case struct {
	Name string
	// Valid is cryptsetup's verdict: does the header still load?
	Valid bool
	// Mutate edits the JSON document; Area edits the raw JSON area instead.
	Mutate func(doc map[string]any)
	Area   func(area []byte)
}

func num(s string) json.Number { return json.Number(s) }

func u64(v any) uint64 {
	s, _ := v.(string)
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

func str(n uint64) string { return strconv.FormatUint(n, 10) }

// Cases returns the validation cases (names follow cryptsetup's generator
// scripts where one exists).
func Cases() []Case {
	area := func(doc map[string]any, slot string) map[string]any { return Obj(doc, "keyslots", slot, "area") }
	seg := func(doc map[string]any) map[string]any { return Obj(doc, "segments", "0") }
	return []Case{
		{Name: "unchanged", Valid: true, Mutate: func(map[string]any) {}},
		{Name: "unknown fields everywhere", Valid: true, Mutate: func(doc map[string]any) {
			doc["x-top"] = map[string]any{"a": []any{num("1"), "b"}}
			Obj(doc, "keyslots", "0")["x-slot"] = "kept"
			seg(doc)["x-seg"] = num("7")
			Obj(doc, "config")["x-config"] = true
		}},
		{Name: "pbkdf2-leftover-params", Valid: true, Mutate: func(doc map[string]any) {
			k := Obj(doc, "keyslots", "1", "kdf")
			k["time"], k["memory"], k["cpus"] = num("4"), num("32"), num("1")
		}},
		{Name: "uint64-max-segment-size", Valid: true, Mutate: func(doc map[string]any) { seg(doc)["size"] = "18446744073709551104" }},
		{Name: "segment-unknown-type", Valid: true, Mutate: func(doc map[string]any) {
			s := seg(doc)
			doc["segments"].(map[string]any)["0"] = map[string]any{"type": "some_type", "offset": s["offset"], "size": s["size"], "a_field": num("0")}
		}},
		{Name: "segment-two", Valid: true, Mutate: func(doc map[string]any) {
			s := seg(doc)
			s["size"] = "4096"
			doc["segments"].(map[string]any)["1"] = map[string]any{"type": "some", "offset": str(u64(s["offset"]) + 4096), "size": "dynamic"}
		}},
		{Name: "config-flags-unknown-flag", Valid: true, Mutate: func(doc map[string]any) {
			Obj(doc, "config")["flags"] = []any{"allow-discards", "not-a-flag"}
		}},
		{Name: "non-null-byte-beyond-json0", Area: func(a []byte) { a[len(trimNUL(a))] = 'X' }},
		{Name: "non-null-bytes-beyond-json0", Area: func(a []byte) { a[len(a)-1] = 'X' }},
		{Name: "missing-trailing-null-byte-json0", Area: func(a []byte) {
			n := len(trimNUL(a))
			for i := n; i < len(a)-1; i++ {
				a[i] = ' '
			}
			a[len(a)-1] = '}'
			copy(a[n-1:], " ")
		}},
		{Name: "invalid-opening-char-json0", Area: func(a []byte) {
			n := len(trimNUL(a))
			copy(a[1:n+1], a[:n])
			a[0] = ' '
		}},
		// json-c consumes whitespace after the object before cryptsetup
		// checks for NULs.
		{Name: "trailing-newline-json0", Valid: true, Area: func(a []byte) { a[len(trimNUL(a))] = '\n' }},
		{Name: "trailing-garbage-json0", Area: func(a []byte) { copy(a[len(trimNUL(a)):], " x") }},
		{Name: "invalid-object-type-json0", Area: func(a []byte) {
			clear(a)
			copy(a, `[{"keyslots":{}}]`)
		}},
		{Name: "overlapping-areas-c0", Mutate: func(doc map[string]any) {
			area(doc, "1")["offset"], area(doc, "1")["size"] = area(doc, "0")["offset"], area(doc, "0")["size"]
		}},
		{Name: "overlapping-areas-c1", Mutate: func(doc map[string]any) {
			area(doc, "1")["offset"] = str(u64(area(doc, "0")["offset"]) + 1)
			area(doc, "1")["size"] = str(u64(area(doc, "0")["size"]) - 1)
		}},
		{Name: "overlapping-areas-c2", Mutate: func(doc map[string]any) {
			a := area(doc, "0")
			area(doc, "1")["offset"] = str(u64(a["offset"]) + u64(a["size"]) - 1)
		}},
		{Name: "area-in-json-hdr-space-json0", Mutate: func(doc map[string]any) {
			area(doc, "0")["offset"], area(doc, "0")["size"] = "16384", "4096"
		}},
		{Name: "keyslot-area-past-keyslots-area", Mutate: func(doc map[string]any) {
			area(doc, "1")["offset"] = str(16 << 20)
		}},
		{Name: "keyslot-invalid-area-size", Mutate: func(doc map[string]any) { area(doc, "0")["size"] = "18446744073709551615" }},
		{Name: "keyslot-invalid-area", Mutate: func(doc map[string]any) { Obj(doc, "keyslots", "0")["area"] = num("42") }},
		{Name: "keyslot-invalid-objects", Mutate: func(doc map[string]any) {
			k := Obj(doc, "keyslots", "0")
			k["kdf"], k["af"] = num("42"), num("42")
		}},
		{Name: "keyslot-invalid-af", Mutate: func(doc map[string]any) { Obj(doc, "keyslots", "0", "af")["type"] = num("42") }},
		{Name: "keyslot-key-size-string", Mutate: func(doc map[string]any) { Obj(doc, "keyslots", "0")["key_size"] = "64" }},
		{Name: "keyslot-pbkdf2-iterations-string", Mutate: func(doc map[string]any) { Obj(doc, "keyslots", "0", "kdf")["iterations"] = "1000" }},
		{Name: "keyslot-missing-digest", Mutate: func(doc map[string]any) { Obj(doc, "digests", "0")["keyslots"] = []any{"0"} }},
		{Name: "keyslot-too-many-digests", Mutate: func(doc map[string]any) {
			d := Obj(doc, "digests", "0")
			c := map[string]any{}
			for k, v := range d {
				c[k] = v
			}
			c["segments"] = []any{}
			doc["digests"].(map[string]any)["1"] = c
		}},
		{Name: "missing-keyslot-referenced-in-digest", Mutate: func(doc map[string]any) {
			Obj(doc, "digests", "0")["keyslots"] = []any{"0", "1", "5"}
		}},
		{Name: "missing-segment-referenced-in-digest", Mutate: func(doc map[string]any) {
			Obj(doc, "digests", "0")["segments"] = []any{"0", "3"}
		}},
		{Name: "missing-keyslot-referenced-in-token", Mutate: func(doc map[string]any) {
			Obj(doc, "tokens")["0"] = map[string]any{"type": "x", "keyslots": []any{"9"}}
		}},
		{Name: "token-keyslots-not-strings", Mutate: func(doc map[string]any) {
			Obj(doc, "tokens")["0"] = map[string]any{"type": "x", "keyslots": []any{num("0")}}
		}},
		{Name: "token-missing-type", Mutate: func(doc map[string]any) {
			Obj(doc, "tokens")["0"] = map[string]any{"keyslots": []any{"0"}}
		}},
		{Name: "token-unknown-fields", Valid: true, Mutate: func(doc map[string]any) {
			Obj(doc, "tokens")["3"] = map[string]any{"type": "atrest", "keyslots": []any{"1"}, "any": map[string]any{"thing": []any{}}}
		}},
		{Name: "invalid-tokens", Mutate: func(doc map[string]any) { doc["tokens"] = num("42") }},
		{Name: "invalid-top-objects", Mutate: func(doc map[string]any) {
			doc["tokens"], doc["digests"], doc["keyslots"], doc["segments"] = num("42"), num("42"), []any{}, "hi"
		}},
		{Name: "missing-config", Mutate: func(doc map[string]any) { delete(doc, "config") }},
		{Name: "uint64-overflow-segment-size", Mutate: func(doc map[string]any) { seg(doc)["size"] = "18446744073709551616" }},
		{Name: "uint64-signed-segment-size", Mutate: func(doc map[string]any) { seg(doc)["size"] = "-512" }},
		{Name: "segment-missing-type", Mutate: func(doc map[string]any) { delete(seg(doc), "type") }},
		{Name: "segment-wrong-type", Mutate: func(doc map[string]any) { seg(doc)["type"] = num("42") }},
		{Name: "segment-missing-offset", Mutate: func(doc map[string]any) { delete(seg(doc), "offset") }},
		{Name: "segment-wrong-offset", Mutate: func(doc map[string]any) { seg(doc)["offset"] = "-42" }},
		{Name: "segment-unaligned-offset", Mutate: func(doc map[string]any) { seg(doc)["offset"] = str(16<<20 + 100) }},
		{Name: "segment-missing-size", Mutate: func(doc map[string]any) { delete(seg(doc), "size") }},
		{Name: "segment-wrong-size-0", Mutate: func(doc map[string]any) { seg(doc)["size"] = num("4096") }},
		{Name: "segment-wrong-size-1", Mutate: func(doc map[string]any) { seg(doc)["size"] = "automatic" }},
		{Name: "segment-wrong-size-2", Mutate: func(doc map[string]any) { seg(doc)["size"] = "511" }},
		{Name: "segment-crypt-missing-encryption", Mutate: func(doc map[string]any) { delete(seg(doc), "encryption") }},
		{Name: "segment-crypt-wrong-encryption", Mutate: func(doc map[string]any) { seg(doc)["encryption"] = map[string]any{} }},
		{Name: "segment-crypt-empty-encryption", Mutate: func(doc map[string]any) { seg(doc)["encryption"] = "" }},
		{Name: "segment-crypt-missing-ivoffset", Mutate: func(doc map[string]any) { delete(seg(doc), "iv_tweak") }},
		{Name: "segment-crypt-wrong-ivoffset", Mutate: func(doc map[string]any) { seg(doc)["iv_tweak"] = "dynamic" }},
		{Name: "segment-crypt-missing-sectorsize", Mutate: func(doc map[string]any) { delete(seg(doc), "sector_size") }},
		{Name: "segment-crypt-wrong-sectorsize-0", Mutate: func(doc map[string]any) { seg(doc)["sector_size"] = num("1023") }},
		{Name: "segment-crypt-wrong-sectorsize-1", Mutate: func(doc map[string]any) { seg(doc)["sector_size"] = "4096" }},
		{Name: "segment-crypt-wrong-sectorsize-2", Mutate: func(doc map[string]any) { seg(doc)["sector_size"] = num("-1024") }},
		{Name: "segment-crypt-sectorsize-float", Mutate: func(doc map[string]any) { seg(doc)["sector_size"] = num("512.0") }},
		{Name: "segment-crypt-no-digest", Mutate: func(doc map[string]any) { Obj(doc, "digests", "0")["segments"] = []any{} }},
		{Name: "segment-wrong-flags", Mutate: func(doc map[string]any) { seg(doc)["flags"] = "hello" }},
		{Name: "segment-wrong-flags-element", Mutate: func(doc map[string]any) { seg(doc)["flags"] = []any{"hello", num("1")} }},
		{Name: "segment-wrong-backup-key-0", Mutate: func(doc map[string]any) {
			doc["segments"].(map[string]any)["2"] = map[string]any{"type": "linear", "offset": "512", "size": "512", "flags": []any{"backup-x"}}
		}},
		{Name: "invalid-keyslots-size-c0", Mutate: func(doc map[string]any) {
			Obj(doc, "config")["keyslots_size"] = str(u64(seg(doc)["offset"]) - 2*16384 + 4096)
		}},
		{Name: "invalid-keyslots-size-c1", Mutate: func(doc map[string]any) {
			Obj(doc, "config")["keyslots_size"] = str(u64(Obj(doc, "config")["keyslots_size"]) - 1)
		}},
		{Name: "invalid-keyslots-size-c2", Mutate: func(doc map[string]any) {
			Obj(doc, "config")["keyslots_size"] = str(u64(area(doc, "1")["offset"]) - 2*16384)
		}},
		{Name: "invalid-json-size-c0", Mutate: func(doc map[string]any) { Obj(doc, "config")["json_size"] = "12287" }},
		{Name: "invalid-json-size-c1", Mutate: func(doc map[string]any) { Obj(doc, "config")["json_size"] = "28672" }},
		{Name: "requirements-mandatory-not-array", Mutate: func(doc map[string]any) {
			Obj(doc, "config")["requirements"] = map[string]any{"mandatory": "x"}
		}},
		// json-c's nesting limit: 32 levels, the scalar included (top
		// object, tokens, token 0, then the arrays).
		{Name: "json-nesting-32-levels", Valid: true, Mutate: func(doc map[string]any) {
			Obj(doc, "tokens")["0"] = map[string]any{"type": "x", "keyslots": []any{}, "n": nested(28)}
		}},
		{Name: "json-nesting-33-levels", Mutate: func(doc map[string]any) {
			Obj(doc, "tokens")["0"] = map[string]any{"type": "x", "keyslots": []any{}, "n": nested(29)}
		}},
		{Name: "requirements-unknown-mandatory", Valid: true, Mutate: func(doc map[string]any) {
			Obj(doc, "config")["requirements"] = map[string]any{"mandatory": []any{"future-feature"}}
		}},
	}
}

func trimNUL(a []byte) []byte {
	for i, c := range a {
		if c == 0 {
			return a[:i]
		}
	}
	return a
}

// nested returns the number 1 inside n arrays.
func nested(n int) any {
	var v any = num("1")
	for range n {
		v = []any{v}
	}
	return v
}
