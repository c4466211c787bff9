package volume

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"unicode"
)

// A name read from a header is held to the rule for names typed on the
// command line: a token naming the volume ../../etc/x, or holding terminal
// escapes, is refused. Rekey does not take it over, status shows no raw
// control byte and says why, and the name is not used for anything.
func TestNameFromHeaderIsValidatedLikeACommandLineName(t *testing.T) {
	for _, bad := range []string{"../../etc/x", "\x1b[2J\x1b[31mred", "data\n1", "a b"} {
		t.Run(strings.ToValidUTF8(bad, "?"), func(t *testing.T) {
			ctx := context.Background()
			m := newTestManager(t)
			img, rk := formatWithRecovery(t, m, "good")
			quoted, _ := json.Marshal(bad)
			rewriteAtrestToken(t, img, func(s string) string { return strings.Replace(s, `"name":"good"`, `"name":`+string(quoted), 1) })
			before, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}

			v, err := m.Find(ctx, img)
			if err != nil {
				t.Fatalf("find: %v", err)
			}
			if v.Name != "" || v.Managed() {
				t.Fatalf("the header's name %q was accepted (name %q, managed %v)", bad, v.Name, v.Managed())
			}
			_, err = m.Rekey(ctx, v, RekeyOptions{})
			if err == nil || !strings.Contains(err.Error(), "volume name") {
				t.Fatalf("rekey of a volume whose header names it %q: %v, want a refusal naming the name", bad, err)
			}
			after, _ := os.ReadFile(img)
			if !bytes.Equal(before[:16<<20], after[:16<<20]) {
				t.Fatal("the refused rekey changed the header")
			}
			sts, errs := m.StatusOf(ctx, []string{img})
			if len(errs) != 0 || len(sts) != 1 {
				t.Fatalf("status: %v", errs)
			}
			s := sts[0]
			all := s.Name + strings.Join(s.Problems, " | ")
			if strings.ContainsFunc(all, unicode.IsControl) {
				t.Fatalf("status carries the raw name %q: %q", bad, all)
			}
			if s.Healthy || !strings.Contains(strings.Join(s.Problems, "\n"), "volume name") {
				t.Fatalf("status does not say the name is refused: %q", s.Problems)
			}

			// The way out docs/operations.md gives: adopt it under a good
			// name with the recovery key.
			res, err := m.Adopt(ctx, AdoptOptions{Device: img, Name: "fixed", Passphrase: rk})
			if err != nil {
				t.Fatalf("adopt under a valid name with the recovery key: %v", err)
			}
			res.Recovery.Wipe()
			if v, err := m.Find(ctx, img); err != nil || !v.Managed() || v.Name != "fixed" {
				t.Fatalf("after adopt: %+v, %v", v, err)
			}
		})
	}
}
