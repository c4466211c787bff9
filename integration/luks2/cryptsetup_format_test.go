package luks2

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/kdf"
)

// TestAtrestReadsWhatCryptsetupMakes: cryptsetup formats with each KDF and
// hash and both sector sizes, adds keyslots, imports a token and kills a
// keyslot; atrest reads all of it, opens every keyslot to the volume key
// cryptsetup reports, then adds a keyslot and a token in one commit that
// cryptsetup opens and exports.
func TestAtrestReadsWhatCryptsetupMakes(t *testing.T) {
	requireTier(t)
	kdfs := []struct {
		name string
		args []string
		want kdf.Type
	}{
		{"pbkdf2-sha1", []string{"--pbkdf", "pbkdf2", "--hash", "sha1", "--pbkdf-force-iterations", "1000"}, kdf.PBKDF2},
		{"pbkdf2-sha256", []string{"--pbkdf", "pbkdf2", "--hash", "sha256", "--pbkdf-force-iterations", "1000"}, kdf.PBKDF2},
		{"pbkdf2-sha512", []string{"--pbkdf", "pbkdf2", "--hash", "sha512", "--pbkdf-force-iterations", "1000"}, kdf.PBKDF2},
		{"argon2i", append([]string{"--pbkdf", "argon2i"}, argon2Args...), kdf.Argon2i},
		{"argon2id", append([]string{"--pbkdf", "argon2id"}, argon2Args...), kdf.Argon2id},
	}
	path := loopDevice(t, 40*mib)
	k0, k1, k2 := keyFile(t, "first passphrase"), keyFile(t, "second passphrase"), keyFile(t, "third passphrase")
	for _, kd := range kdfs {
		for _, sector := range []int{512, 4096} {
			t.Run(kd.name+"/sector-"+strconv.Itoa(sector), func(t *testing.T) {
				format := append([]string{"luksFormat", "--type", "luks2", "--sector-size", strconv.Itoa(sector), "--key-file", k0}, kd.args...)
				cryptsetup(t, "", append(format, path)...)
				cryptsetup(t, "", append(append([]string{"luksAddKey", "--key-file", k0, "--new-key-slot", "1"}, kd.args...), path, k1)...)
				cryptsetup(t, "", "luksAddKey", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", k0, "--new-key-slot", "2", path, k2)
				cryptsetup(t, `{"type":"clevis","keyslots":["1"],"jwe":{"protected":"x"}}`, "token", "import", "--token-id", "4", path)
				cryptsetup(t, "", "luksKillSlot", path, "2")
				vk := dumpVolumeKey(t, path, k0)

				dev := openDev(t, path)
				h := read(t, dev)
				if ids := h.KeyslotIDs(); !slices.Equal(ids, []int{0, 1}) {
					t.Fatalf("keyslots %v, want [0 1] (2 was killed)", ids)
				}
				if got := h.Keyslots[0].KDF.Type; got != kd.want {
					t.Errorf("keyslot 0 kdf %s, want %s", got, kd.want)
				}
				tok := h.Tokens[4]
				if tok == nil || tok.Type != "clevis" || !slices.Equal(tok.Keyslots, []int{1}) {
					t.Fatalf("token 4: %+v", tok)
				}
				a, err := h.Activation()
				if err != nil {
					t.Fatal(err)
				}
				if a.SectorSize != uint32(sector) || a.Offset != 16*mib || a.KeySize != 64 || a.Cipher != "aes-xts-plain64" {
					t.Errorf("activation %+v", a)
				}
				for slot, pass := range map[int]string{0: "first passphrase", 1: "second passphrase"} {
					got, err := h.OpenKeyslot(dev, slot, key(t, pass))
					if err != nil {
						t.Fatalf("keyslot %d: %v", slot, err)
					}
					if !bytes.Equal(got.Bytes(), vk) {
						t.Errorf("keyslot %d gives a volume key cryptsetup does not", slot)
					}
					got.Wipe()
				}
				if _, _, err := h.Open(dev, key(t, "third passphrase")); err == nil {
					t.Error("the killed keyslot's passphrase still opens")
				}

				// atrest adds a platform keyslot and its token in one commit.
				vkKey, _, err := h.Open(dev, key(t, "first passphrase"))
				if err != nil {
					t.Fatal(err)
				}
				defer vkKey.Wipe()
				u, err := h.Begin()
				if err != nil {
					t.Fatal(err)
				}
				slot, err := u.AddKeyslot(vkKey, key(t, platformPass), luks2.KeyslotOptions{Slot: luks2.AnySlot, KDF: kdf.Platform()})
				if err != nil {
					t.Fatal(err)
				}
				tokJSON := `{"type":"atrest","keyslots":["` + strconv.Itoa(slot) + `"],"key_version":1}`
				tid, err := u.SetToken(luks2.AnyToken, []byte(tokJSON))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := u.Commit(ctx(t), dev); err != nil {
					t.Fatal(err)
				}
				platform := keyFile(t, platformPass)
				cryptsetup(t, "", "open", "--test-passphrase", "--key-slot", strconv.Itoa(slot), "--key-file", platform, path)
				if got := dumpVolumeKey(t, path, platform); !bytes.Equal(got, vk) {
					t.Error("the keyslot atrest added holds another volume key")
				}
				exported := strings.TrimSpace(cryptsetup(t, "", "token", "export", "--token-id", strconv.Itoa(tid), path))
				if !jsonEqual(t, exported, tokJSON) {
					t.Errorf("token export %s, want %s", exported, tokJSON)
				}
				// cryptsetup's own token survived atrest's rewrite.
				exported = strings.TrimSpace(cryptsetup(t, "", "token", "export", "--token-id", "4", path))
				if !jsonEqual(t, exported, `{"type":"clevis","keyslots":["1"],"jwe":{"protected":"x"}}`) {
					t.Errorf("clevis token after atrest's commit: %s", exported)
				}
			})
		}
	}
}
