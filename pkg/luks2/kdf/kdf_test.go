package kdf

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"hash"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/pbkdf2"

	"github.com/atrest/atrest/pkg/secret"
)

func key(t *testing.T, s string) *secret.Key {
	k, err := secret.FromBytes([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

// TestPBKDF2Vectors: RFC 6070's SHA-1 vectors, and agreement with
// golang.org/x/crypto/pbkdf2 for SHA-256/512 over several output blocks.
func TestPBKDF2Vectors(t *testing.T) {
	for _, v := range []struct {
		pass, salt string
		iter, n    int
		want       string
	}{
		{"password", "salt", 1, 20, "0c60c80f961f0e71f3a9b524af6012062fe037a6"},
		{"password", "salt", 4096, 20, "4b007901b765489abead49d926f721d065a429c1"},
		{"passwordPASSWORDpassword", "saltSALTsaltSALTsaltSALTsaltSALTsalt", 4096, 25, "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038"},
	} {
		got, err := Derive(Params{Type: PBKDF2, Hash: "sha1", Iterations: uint32(v.iter), Salt: []byte(v.salt)}, key(t, v.pass), v.n)
		if err != nil {
			t.Fatal(err)
		}
		if h := hex.EncodeToString(got.Bytes()); h != v.want {
			t.Errorf("pbkdf2-sha1(%q, %d): %s, want %s", v.pass, v.iter, h, v.want)
		}
		got.Wipe()
	}
	for _, n := range []int{20, 32, 64, 100, 130} {
		for name, h := range map[string]func() hash.Hash{"sha256": sha256.New, "sha512": sha512.New} {
			got, err := Derive(Params{Type: PBKDF2, Hash: name, Iterations: 7, Salt: []byte("salty")}, key(t, "pw"), n)
			if err != nil {
				t.Fatal(err)
			}
			want := pbkdf2.Key([]byte("pw"), []byte("salty"), 7, n, h)
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("pbkdf2-%s, %d bytes: differs from x/crypto", name, n)
			}
			got.Wipe()
			// A passphrase longer than the hash's block, which HMAC
			// hashes first (the general path).
			long := strings.Repeat("long passphrase ", 10)
			got, err = Derive(Params{Type: PBKDF2, Hash: name, Iterations: 1000, Salt: []byte("salty")}, key(t, long), n)
			if err != nil {
				t.Fatal(err)
			}
			if want := pbkdf2.Key([]byte(long), []byte("salty"), 1000, n, h); !bytes.Equal(got.Bytes(), want) {
				t.Errorf("pbkdf2-%s of a long passphrase, %d bytes: differs from x/crypto", name, n)
			}
			got.Wipe()
		}
	}
}

func TestArgon2MatchesReference(t *testing.T) {
	salt := bytes.Repeat([]byte{7}, SaltSize)
	for _, typ := range []Type{Argon2i, Argon2id} {
		got, err := Derive(Params{Type: typ, Time: 2, Memory: 64, CPUs: 2, Salt: salt}, key(t, "pw"), 64)
		if err != nil {
			t.Fatal(err)
		}
		want := argon2.IDKey([]byte("pw"), salt, 2, 64, 2, 64)
		if typ == Argon2i {
			want = argon2.Key([]byte("pw"), salt, 2, 64, 2, 64)
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Errorf("%s differs from x/crypto/argon2", typ)
		}
		got.Wipe()
	}
}

func TestParamsValidate(t *testing.T) {
	salt := []byte("s")
	for _, p := range []Params{
		{Type: "scrypt", Salt: salt},
		{Type: PBKDF2, Hash: "md5", Iterations: 1, Salt: salt},
		{Type: PBKDF2, Hash: "sha256", Iterations: 0, Salt: salt},
		{Type: Argon2id, Time: 1, Memory: 8, CPUs: 1, Salt: salt},
		{Type: Argon2id, Time: 1, Memory: 5 << 20, CPUs: 1, Salt: salt},
		{Type: Argon2i, Time: 0, Memory: 64, CPUs: 1, Salt: salt},
		{Type: PBKDF2, Hash: "sha256", Iterations: 1},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v accepted", p)
		}
	}
	if p := Platform(); p.Type != PBKDF2 || p.Hash != "sha512" || p.Iterations != 1000 {
		t.Errorf("platform params %+v", p)
	}
}
