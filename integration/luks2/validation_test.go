package luks2

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/luks2test"
)

// TestValidationVerdictsAgree runs cryptsetup's header validation cases
// (package luks2test) on a cryptsetup-made header: cryptsetup's verdict
// (does luksDump load it?) must be the one recorded in the table, and
// atrest's must match it.
func TestValidationVerdictsAgree(t *testing.T) {
	requireTier(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	if err := os.WriteFile(base, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(base, 20*mib); err != nil {
		t.Fatal(err)
	}
	k0, k1 := keyFile(t, "zero"), keyFile(t, "one")
	cryptsetup(t, "", "luksFormat", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--sector-size", "512", "--key-file", k0, base)
	cryptsetup(t, "", "luksAddKey", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", k0, base, k1)
	img, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range luks2test.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			mutated := append([]byte(nil), img...)
			if c.Area != nil {
				err = luks2test.RewriteArea(mutated, c.Area)
			} else {
				err = luks2test.Rewrite(mutated, c.Mutate)
			}
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), "hdr.img")
			if err := os.WriteFile(p, mutated, 0o600); err != nil {
				t.Fatal(err)
			}
			_, errOut, csErr := runCryptsetup("", "luksDump", p)
			if (csErr == nil) != c.Valid {
				t.Fatalf("cryptsetup's verdict is valid=%v, the table says %v (%s)", csErr == nil, c.Valid, errOut)
			}
			f := openDev(t, p)
			_, err := luks2.Read(ctx(t), f)
			if (err == nil) != c.Valid {
				t.Fatalf("atrest says valid=%v (%v), cryptsetup %v", err == nil, err, c.Valid)
			}
		})
	}
}
