package recoverykey

import (
	"regexp"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/secret"
)

var shape = regexp.MustCompile(`^[cbdefghijklnrtuv]{8}(-[cbdefghijklnrtuv]{8}){7}$`)

func key(t *testing.T, s string) *secret.Key {
	t.Helper()
	k, err := secret.FromBytes([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

func TestGenerateMatchesSystemdShape(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		k, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		s := string(k.Bytes())
		k.Wipe()
		if len(s) != 71 || !shape.MatchString(s) {
			t.Fatalf("generated key has the wrong shape (len %d)", len(s))
		}
		if seen[s] {
			t.Fatal("two generated recovery keys are equal")
		}
		seen[s] = true
	}
}

// The key is the vector of systemd's own test (src/test/test-recovery-key.c),
// which accepts it with and without dashes; upper case (systemd's decoder
// accepts it) and surrounding white space (our addition) normalise to the
// same canonical passphrase.
func TestNormalizeSystemdVector(t *testing.T) {
	const canonical = "iefgcelh-biduvkjv-cjvuncnk-vlfchdid-jhtuhhde-urkllkeg-ilkjgbrt-hjkbgktj"
	for _, in := range []string{
		canonical,
		strings.ReplaceAll(canonical, "-", ""),
		strings.ToUpper(canonical),
		"  " + canonical + "\n",
	} {
		n, err := Normalize(key(t, in))
		if err != nil {
			t.Fatalf("Normalize(%q): %v", in, err)
		}
		if got := string(n.Bytes()); got != canonical {
			t.Fatalf("Normalize(%q) = %q, want %q", in, got, canonical)
		}
		n.Wipe()
	}
}

func TestNormalizeRejects(t *testing.T) {
	const canonical = "iefgcelh-biduvkjv-cjvuncnk-vlfchdid-jhtuhhde-urkllkeg-ilkjgbrt-hjkbgktj"
	for name, in := range map[string]string{
		"too short":       canonical[:70],
		"dash misplaced":  "iefgcel-hbiduvkjv-cjvuncnk-vlfchdid-jhtuhhde-urkllkeg-ilkjgbrt-hjkbgktj",
		"not modhex":      strings.Replace(canonical, "i", "a", 1),
		"a passphrase":    "correct horse battery staple",
		"digits in place": strings.Replace(canonical, "e", "0", 1),
	} {
		if _, err := Normalize(key(t, in)); err != ErrMalformed {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
		if Looks([]byte(in)) {
			t.Errorf("%s: Looks reports a recovery key", name)
		}
		if err := ErrMalformed.Error(); strings.Contains(err, in) {
			t.Errorf("%s: error message repeats the input", name)
		}
	}
	if !Looks([]byte(canonical)) {
		t.Fatal("Looks rejects a valid recovery key")
	}
}
