// Package tokenedit rewrites a token in the LUKS2 header of a test device or
// image (it lives apart from internal/testutil, which pkg/luks2's own tests
// import, so that it may import pkg/luks2).
package tokenedit

import (
	"context"
	"testing"

	"github.com/atrest/atrest/pkg/luks2"
)

// EditToken replaces the JSON of the first token of type typ in the
// LUKS2 header of the device or image at path with what edit makes of it,
// in an ordinary header commit (cryptsetup reads the result as long as
// the token keeps its type and keyslots). It returns the token's number;
// a header without such a token fails the test.
func EditToken(t testing.TB, path, typ string, edit func([]byte) []byte) int {
	t.Helper()
	ctx := context.Background()
	f, err := luks2.OpenFile(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := luks2.Read(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range h.TokenIDs() {
		if h.Tokens[id].Type != typ {
			continue
		}
		u, err := h.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.SetToken(id, edit(h.Tokens[id].JSON())); err != nil {
			t.Fatal(err)
		}
		if _, err := u.Commit(ctx, f); err != nil {
			t.Fatal(err)
		}
		return id
	}
	t.Fatalf("%s: no %s token", path, typ)
	return -1
}
