package volume

import (
	"encoding/json"
	"slices"
	"strconv"

	"github.com/atrest/atrest/pkg/token"
)

// takeCopiedToken reads the platform token of a volume whose re-encryption
// cryptsetup started. cryptsetup binds every token of the keyslot it
// re-encrypts to the new keyslot as well (its token assignment copy), so
// the atrest token names the old and the new keyslot until the end, while
// atrest tokens name exactly one. The token is taken, in memory only, as
// bound to the old keyslot; the re-encryption's end binds it to the new
// one alone (Reencryptor.Rebind) in the final header.
func (c *change) takeCopiedToken() {
	h := c.v.Header
	if c.v.Platform != nil || len(c.v.Unreadable) != 1 || len(c.v.Unreadable[0].Keyslots) != 2 {
		return
	}
	st, err := h.Reencryption()
	if st == nil || err != nil {
		return
	}
	u := c.v.Unreadable[0]
	old, nw := h.Digests[st.OldDigest], h.Digests[st.NewDigest]
	if old == nil || nw == nil || !slices.Contains(old.Keyslots, u.Keyslots[0]) || !slices.Contains(nw.Keyslots, u.Keyslots[1]) {
		return
	}
	var doc map[string]any
	if err := json.Unmarshal(h.Tokens[u.ID].JSON(), &doc); err != nil {
		return
	}
	doc["keyslots"] = []string{strconv.Itoa(u.Keyslots[0])}
	data, err := json.Marshal(doc)
	if err != nil {
		return
	}
	tok, err := token.Parse(data)
	if err != nil {
		return
	}
	c.v.Platform, c.v.TokenID, c.v.Unreadable = tok, u.ID, nil
	if c.v.Name == "" {
		c.v.Name = tok.Name
	}
}
