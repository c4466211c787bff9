// Package recoverykey makes and reads systemd-compatible recovery keys.
//
// A recovery key is 32 random bytes written as 64 modhex characters
// (alphabet "cbdefghijklnrtuv", high nibble first) with a dash after every
// eight, 71 characters in all: the exact form systemd-cryptenroll
// --recovery-key prints. The formatted string itself is the LUKS2 keyslot
// passphrase, so systemd-cryptsetup and cryptsetup accept the same key that
// atrest prints. Input is normalised the way systemd does it: either the
// dashed form or the 64 characters without dashes, in either case.
package recoverykey

import (
	"errors"

	"github.com/atrest/atrest/pkg/secret"
)

const (
	// RawLen is the number of random bytes in a recovery key.
	RawLen = 32
	// Len is the length of the formatted key: 64 characters and 7 dashes.
	Len = RawLen*2 + RawLen/4 - 1
	// TokenType is the LUKS2 token type systemd uses to mark the recovery
	// keyslot.
	TokenType = "systemd-recovery"
)

const alphabet = "cbdefghijklnrtuv"

// ErrMalformed means the input is not a recovery key. It never includes the
// input: a mistyped recovery key is still mostly a secret.
var ErrMalformed = errors.New("not a recovery key: expected 64 modhex characters (cbdefghijklnrtuv), in 8 groups of 8 separated by dashes")

// Generate returns a new random recovery key in its formatted form.
func Generate() (*secret.Key, error) {
	raw, err := secret.Random(RawLen)
	if err != nil {
		return nil, err
	}
	defer raw.Wipe()
	return format(raw.Bytes())
}

func format(raw []byte) (*secret.Key, error) {
	out, err := secret.New(Len)
	if err != nil {
		return nil, err
	}
	b := out.Bytes()
	j := 0
	for i, c := range raw {
		b[j] = alphabet[c>>4]
		b[j+1] = alphabet[c&0xf]
		j += 2
		if i%4 == 3 && j < Len {
			b[j] = '-'
			j++
		}
	}
	return out, nil
}

func decode(c byte) (byte, bool) {
	if c >= 'A' && c <= 'Z' {
		c += 'a' - 'A'
	}
	for i := 0; i < len(alphabet); i++ {
		if alphabet[i] == c {
			return byte(i), true
		}
	}
	return 0, false
}

// Normalize checks that in is a recovery key and returns it in canonical
// form (lower case, dashed), the exact passphrase of the keyslot. Leading
// and trailing white space is ignored, as a key pasted from a terminal often
// carries some.
func Normalize(in *secret.Key) (*secret.Key, error) {
	s := in.Bytes()
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	if len(s) != RawLen*2 && len(s) != Len {
		return nil, ErrMalformed
	}
	raw, err := secret.New(RawLen)
	if err != nil {
		return nil, err
	}
	defer raw.Wipe()
	r := raw.Bytes()
	dashed := len(s) == Len
	for i := range RawLen {
		k := i * 2
		if dashed {
			k += i / 4
			if i > 0 && i%4 == 0 && s[k-1] != '-' {
				return nil, ErrMalformed
			}
		}
		hi, ok1 := decode(s[k])
		lo, ok2 := decode(s[k+1])
		if !ok1 || !ok2 {
			return nil, ErrMalformed
		}
		r[i] = hi<<4 | lo
	}
	return format(r)
}

// Looks reports whether b has the shape of a recovery key, so that a prompt
// can tell a recovery key from a passphrase without trying both.
func Looks(b []byte) bool {
	k, err := secret.New(max(len(b), 1))
	if err != nil {
		return false
	}
	defer k.Wipe()
	copy(k.Bytes(), b)
	n, err := Normalize(k)
	if err != nil {
		return false
	}
	n.Wipe()
	return true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
