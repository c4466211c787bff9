package luks2

import (
	"slices"
	"testing"

	luksgo "github.com/anatol/luks.go"

	"github.com/atrest/atrest/pkg/luks2"
)

// TestLuksGoUnsealsAtrestVolumes: anatol/luks.go, an independent reader,
// unseals both keyslots of an atrest-formatted volume (it checks the digest,
// so success means it recovered atrest's volume key) and sees the same
// segment, UUID and persistent flags.
func TestLuksGoUnsealsAtrestVolumes(t *testing.T) {
	requireTier(t)
	path := loopDevice(t, 40*mib)
	h, _ := formatAtrest(t, path, luks2.FormatOptions{Flags: []string{luks2.FlagAllowDiscards, luks2.FlagNoReadWorkqueue}})
	d, err := luksgo.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Version() != 2 || d.UUID() != h.UUID {
		t.Fatalf("luks.go sees version %d, UUID %s", d.Version(), d.UUID())
	}
	if !slices.Equal(d.FlagsGet(), []string{luks2.FlagAllowDiscards, luks2.FlagNoReadWorkqueue}) {
		t.Errorf("luks.go flags %v", d.FlagsGet())
	}
	toks, err := d.Tokens()
	if err != nil || len(toks) != 2 {
		t.Fatalf("luks.go tokens %v: %v", toks, err)
	}
	for slot, pass := range map[int]string{0: platformPass, 1: recoveryPass} {
		v, err := d.UnsealVolume(slot, []byte(pass))
		if err != nil {
			t.Fatalf("luks.go cannot unseal keyslot %d: %v", slot, err)
		}
		if v.StorageOffset != 16*mib || v.StorageSectorSize != 4096 || v.StorageEncryption != "aes-xts-plain64" || v.UUID != h.UUID {
			t.Errorf("luks.go volume %+v", v)
		}
	}
	if _, err := d.UnsealVolume(0, []byte("wrong")); err == nil {
		t.Error("luks.go unsealed keyslot 0 with a wrong passphrase")
	}
}
