package token

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRoundTripAndShape(t *testing.T) {
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	in := &Token{Keyslot: 2, Name: "data1", KMS: "vault-transit", Key: "atrest-node7", KeyVersion: 3,
		Ciphertext: "vault:v3:abc", Created: now, Rotated: now.Add(time.Hour), Recovery: "printed"}
	data, err := in.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// cryptsetup requires these two fields, keyslots as strings.
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["type"] != "atrest" || raw["keyslots"].([]any)[0] != "2" {
		t.Fatalf("LUKS2 token fields wrong: %s", data)
	}
	out, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if *out != *in {
		t.Fatalf("round trip changed the token:\n in %+v\nout %+v", in, out)
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"other type", `{"type":"systemd-recovery","keyslots":["1"]}`, "not an atrest token"},
		{"newer version", `{"type":"atrest","version":9,"keyslots":["0"],"kms":"local","ciphertext":"x"}`, "upgrade atrest"},
		{"two keyslots", `{"type":"atrest","version":1,"keyslots":["0","1"],"kms":"local","ciphertext":"x"}`, "exactly 1"},
		{"no ciphertext", `{"type":"atrest","version":1,"keyslots":["0"],"kms":"local"}`, "no ciphertext"},
		{"bad time", `{"type":"atrest","version":1,"keyslots":["0"],"kms":"local","ciphertext":"x","created":"yesterday"}`, "created"},
		{"not json", `{`, "atrest token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := Parse([]byte(`{"type":"clevis","keyslots":["1"]}`)); !errors.Is(err, ErrNotAtrest) {
		t.Fatalf("foreign token: %v, want ErrNotAtrest", err)
	}
}

// Every atrest token this build cannot use is ErrInvalid, so that callers
// skip it like cryptsetup does; tokens of other types stay ErrNotAtrest.
func TestParseRefusalsAreErrInvalid(t *testing.T) {
	for _, data := range []string{
		`{"type":"atrest","keyslots":["0"],"version":7,"kms":"local","ciphertext":"x"}`,
		`{"type":"atrest","keyslots":["0","1"],"version":1,"kms":"local","ciphertext":"x"}`,
		`{"type":"atrest","keyslots":["0"],"version":"one"}`,
		`{"type":"atrest","keyslots":["0"],"version":1,"kms":"local","ciphertext":"x","created":"yesterday"}`,
	} {
		if _, err := Parse([]byte(data)); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%s) = %v, want ErrInvalid", data, err)
		}
	}
	if _, err := Parse([]byte(`{"type":"systemd-tpm2","keyslots":["0"],"version":"x"}`)); !errors.Is(err, ErrNotAtrest) {
		t.Errorf("another tool's token: %v, want ErrNotAtrest", err)
	}
}
