package luks2

import (
	"context"
	"errors"
	"testing"
)

// sameRead fails unless got is what Read gives for dev now: the same
// metadata, copies and data status.
func sameRead(t *testing.T, what string, got *Header, dev Reader) {
	t.Helper()
	want := read(t, dev)
	if stateOf(got) != stateOf(want) || got.SeqID != want.SeqID || got.Copies[0].Valid != want.Copies[0].Valid ||
		got.Copies[1].Valid != want.Copies[1].Valid || got.Copies[0].SeqID != want.Copies[0].SeqID ||
		got.Copies[1].SeqID != want.Copies[1].SeqID || got.NeedsRepair() != want.NeedsRepair() ||
		(got.Data.Err == nil) != (want.Data.Err == nil) {
		t.Fatalf("%s: Reread gives seq %d, copies %+v, data %v, JSON\n%s\nRead gives seq %d, copies %+v, data %v, JSON\n%s",
			what, got.SeqID, got.Copies, got.Data.Err, stateOf(got), want.SeqID, want.Copies, want.Data.Err, stateOf(want))
	}
}

// Reread gives back the header it was handed only while the device holds
// its bytes: any change made behind its back (another tool's commit, a
// damaged copy, a device that shrank) is read as Read reads it.
func TestRereadSeesEveryChange(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		change func(t *testing.T, dev *memDevice)
	}{
		{"another commit", func(t *testing.T, dev *memDevice) {
			_, u := mustUpdate(t, dev)
			if _, err := u.SetToken(AnyToken, []byte(`{"type":"other-tool","keyslots":["0"]}`)); err != nil {
				t.Fatal(err)
			}
			if _, err := u.Commit(ctx, dev); err != nil {
				t.Fatal(err)
			}
		}},
		{"primary JSON area damaged", func(t *testing.T, dev *memDevice) { dev.flip(DefaultMetadataSize - 1) }},
		{"secondary JSON area damaged", func(t *testing.T, dev *memDevice) { dev.flip(2*DefaultMetadataSize - 1) }},
		{"secondary binary header damaged", func(t *testing.T, dev *memDevice) { dev.flip(DefaultMetadataSize + 500) }},
		{"device truncated to its header", func(t *testing.T, dev *memDevice) { dev.size = DefaultDataOffset }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dev, _, _ := formatted(t, FormatOptions{})
			h := read(t, dev)
			if got, err := Reread(ctx, dev, h); err != nil || got != h {
				t.Fatalf("unchanged device: Reread gives %p (%v), want the header it was given", got, err)
			}
			c.change(t, dev)
			got, err := Reread(ctx, dev, h)
			if err != nil {
				t.Fatal(err)
			}
			if got == h {
				t.Fatal("Reread gave back the old header of a changed device")
			}
			sameRead(t, c.name, got, dev)
		})
	}
}

// The header Commit returns is the one on the device: rereading it gives
// what Read gives, a next update from it commits, and one from it after
// another tool's commit is refused.
func TestCommittedHeaderRereads(t *testing.T) {
	ctx := context.Background()
	dev, _, _ := formatted(t, FormatOptions{})
	_, u := mustUpdate(t, dev)
	if _, err := u.SetToken(AnyToken, []byte(`{"type":"x","keyslots":["0"]}`)); err != nil {
		t.Fatal(err)
	}
	h, err := u.Commit(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Reread(ctx, dev, h)
	if err != nil || got != h {
		t.Fatalf("Reread of the committed header: %p (%v), want it unparsed", got, err)
	}
	sameRead(t, "committed", got, dev)

	// The update's header before its commit is on no device.
	_, u = mustUpdate(t, dev)
	if _, err := u.SetToken(1, []byte(`{"type":"y","keyslots":[]}`)); err != nil {
		t.Fatal(err)
	}
	if got, err := Reread(ctx, dev, u.Header()); err != nil || got == u.Header() || got.Tokens[1] != nil {
		t.Fatalf("Reread of an uncommitted update's header: %v, token 1 %v", err, got.Tokens[1])
	}
	if h, err = u.Commit(ctx, dev); err != nil {
		t.Fatal(err)
	}
	sameRead(t, "second commit", h, dev)

	// From the committed header, a next update commits; after another
	// commit behind its back, it is refused.
	u, err = h.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := u.RemoveToken(1); err != nil {
		t.Fatal(err)
	}
	other, ou := mustUpdate(t, dev)
	if err := ou.RemoveToken(0); err != nil {
		t.Fatal(err)
	}
	if _, err := ou.Commit(ctx, dev); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(ctx, dev); !errors.Is(err, ErrConcurrentUpdate) {
		t.Fatalf("commit from a committed header after another commit: %v, want ErrConcurrentUpdate", err)
	}
	if h := read(t, dev); h.SeqID != other.SeqID+1 || h.Tokens[0] != nil || h.Tokens[1] == nil {
		t.Fatalf("after the refused commit: seq %d, tokens %v", h.SeqID, h.TokenIDs())
	}
}
