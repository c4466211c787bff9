package luks2

import (
	"context"
	"errors"
	"testing"

	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/luks2/luks2test"
)

// twoSlotImage is a formatted device image with keyslots 0 and 1.
func twoSlotImage(t *testing.T) []byte {
	dev, _, vk := formatted(t, FormatOptions{SectorSize: 512})
	_, u := mustUpdate(t, dev)
	if _, err := u.AddKeyslot(vk, pass(t, "second"), KeyslotOptions{Slot: 1, KDF: kdf.Params{Type: kdf.PBKDF2, Hash: "sha256", Iterations: 1000}}); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(context.Background(), dev); err != nil {
		t.Fatal(err)
	}
	return dev.bytesOf()
}

// TestValidationMatchesCryptsetup checks atrest's verdict on each of
// cryptsetup's header validation cases (the integration tests check that
// cryptsetup gives the same verdicts).
func TestValidationMatchesCryptsetup(t *testing.T) {
	base := twoSlotImage(t)
	for _, c := range luks2test.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			img := append([]byte(nil), base...)
			var err error
			if c.Area != nil {
				err = luks2test.RewriteArea(img, c.Area)
			} else {
				err = luks2test.Rewrite(img, c.Mutate)
			}
			if err != nil {
				t.Fatal(err)
			}
			h, err := Read(context.Background(), memFromBytes(img))
			if c.Valid && err != nil {
				t.Fatalf("cryptsetup accepts this header, atrest refuses it: %v", err)
			}
			if !c.Valid {
				if err == nil {
					t.Fatalf("cryptsetup refuses this header, atrest accepts it")
				}
				if !errors.Is(err, ErrHeaderDamaged) {
					t.Fatalf("error %v does not wrap ErrHeaderDamaged", err)
				}
				t.Logf("refused: %v", err)
				return
			}
			// An accepted header survives a rewrite with its unknown fields.
			before := string(h.encodeJSON())
			u, err := h.Begin()
			if err != nil {
				if errors.Is(err, ErrUnmetRequirements) {
					return
				}
				t.Fatal(err)
			}
			dev := memFromBytes(img)
			if _, err := u.Commit(context.Background(), dev); err != nil {
				t.Fatal(err)
			}
			h2, err := Read(context.Background(), dev)
			if err != nil {
				t.Fatal(err)
			}
			if after := string(h2.encodeJSON()); after != before {
				t.Fatalf("rewrite changed the metadata:\n%s\n%s", before, after)
			}
		})
	}
}
