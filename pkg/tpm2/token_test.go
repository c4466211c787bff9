package tpm2

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// testBlob is a well-formed sealed object (no TPM needed to parse it).
func testBlob(policy []byte) []byte {
	return append(tpm2.Marshal(tpm2.TPM2BPrivate{Buffer: bytes.Repeat([]byte{7}, 40)}),
		tpm2.Marshal(tpm2.New2B(sealedTemplate(policy)))...)
}

func TestTokenJSONIsSystemds(t *testing.T) {
	policy := bytes.Repeat([]byte{0xab}, 32)
	blob := testBlob(policy)
	tok := &Token{Keyslot: 1, Sealed: Sealed{Blob: blob, Bank: SHA256, PCRs: []int{7, 0}, PrimaryAlg: ECC, PolicyHash: policy, PIN: true}}
	js, err := tok.JSON()
	if err != nil {
		t.Fatal(err)
	}
	// systemd 252's field order and spelling (tpm2_make_luks2_json).
	want := `{"type":"systemd-tpm2","keyslots":["1"],"tpm2-blob":"` + base64.StdEncoding.EncodeToString(blob) +
		`","tpm2-pcrs":[0,7],"tpm2-pcr-bank":"sha256","tpm2-primary-alg":"ecc","tpm2-policy-hash":"` +
		hex.EncodeToString(policy) + `","tpm2-pin":true}`
	if string(js) != want {
		t.Fatalf("token JSON\n%s\nwant\n%s", js, want)
	}
	back, err := ParseToken(js)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := back.JSON()
	if !bytes.Equal(again, js) {
		t.Fatalf("round trip changed the token:\n%s", again)
	}
}

func TestParseTokenDefaultsAndRefusals(t *testing.T) {
	policy := bytes.Repeat([]byte{0xcd}, 32)
	blob := base64.StdEncoding.EncodeToString(testBlob(policy))
	hash := hex.EncodeToString(policy)
	base := `{"type":"systemd-tpm2","keyslots":["2"],"tpm2-blob":"` + blob + `","tpm2-pcrs":[7],"tpm2-policy-hash":"` + hash + `"`
	// systemd 249's tokens have neither bank, primary algorithm nor PIN.
	tok, err := ParseToken([]byte(base + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Keyslot != 2 || tok.Bank != SHA256 || tok.PrimaryAlg != ECC || tok.PIN {
		t.Fatalf("defaults: %+v", tok)
	}
	short := base64.StdEncoding.EncodeToString(testBlob(policy)[:50])
	trailing := base64.StdEncoding.EncodeToString(append(testBlob(policy), 0))
	for _, c := range []struct {
		name, json string
		want       error
	}{
		{"not JSON", `{`, ErrBadToken},
		{"other type", strings.Replace(base, "systemd-tpm2", "systemd-fido2", 1) + `}`, ErrBadToken},
		{"two keyslots", strings.Replace(base, `["2"]`, `["2","3"]`, 1) + `}`, ErrBadToken},
		{"keyslot not a number", strings.Replace(base, `["2"]`, `["x"]`, 1) + `}`, ErrBadToken},
		{"no blob", strings.Replace(base, `"tpm2-blob"`, `"blob"`, 1) + `}`, ErrBadToken},
		{"blob not base64", strings.Replace(base, blob, "!!", 1) + `}`, ErrBadToken},
		{"blob cut short", strings.Replace(base, blob, short, 1) + `}`, ErrBadToken},
		{"blob with trailing bytes", strings.Replace(base, blob, trailing, 1) + `}`, ErrBadToken},
		{"PCR 24", strings.Replace(base, `[7]`, `[24]`, 1) + `}`, ErrBadToken},
		{"PCR list of strings", strings.Replace(base, `[7]`, `["7"]`, 1) + `}`, ErrBadToken},
		{"policy hash not hex", strings.Replace(base, hash, "zz", 1) + `}`, ErrBadToken},
		{"policy hash short", strings.Replace(base, hash, hash[:62], 1) + `}`, ErrBadToken},
		{"pin not boolean", base + `,"tpm2-pin":"yes"}`, ErrBadToken},
		{"sha384 bank", base + `,"tpm2-pcr-bank":"sha384"}`, ErrUnsupported},
		{"ed25519 primary", base + `,"tpm2-primary-alg":"ed25519"}`, ErrUnsupported},
		{"signed PCR policy", base + `,"tpm2_pubkey_pcrs":[11],"tpm2_pubkey":"AAAA"}`, ErrUnsupported},
		{"salted PIN", base + `,"tpm2_salt":"c2FsdA=="}`, ErrUnsupported},
	} {
		if _, err := ParseToken([]byte(c.json)); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func TestPassphraseIsBase64OfTheSecret(t *testing.T) {
	sec := key(t, "\x00\x01\xfe\xff0123456789abcdef0123456789ab")
	p, err := Passphrase(sec)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Wipe()
	if got, want := string(p.Bytes()), base64.StdEncoding.EncodeToString(sec.Bytes()); got != want {
		t.Fatalf("passphrase %q, want %q", got, want)
	}
}

func TestSwtpmDeviceStrings(t *testing.T) {
	for in, want := range map[string]string{
		"host=127.0.0.1,port=2400": "127.0.0.1:2400",
		"port=2400":                "localhost:2400",
		"":                         "localhost:2321",
	} {
		if got, err := swtpmAddress(in); err != nil || got != want {
			t.Errorf("swtpmAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"port=x", "port=70000", "path=/run/swtpm.sock"} {
		if _, err := swtpmAddress(bad); err == nil {
			t.Errorf("swtpmAddress(%q) accepted", bad)
		}
	}
}
