package luks2

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

const (
	platformPass = "platform-secret-0123456789abcdef"
	recoveryPass = "cbdefghi-jklnrtuv-cbdefghi-jklnrtuv"
	atrestToken  = `{"type":"atrest","keyslots":["0"],"kms":"vault-transit","key":"atrest-node7","key_version":3,"ciphertext":"vault:v3:abc","context":"dXVpZA==","created":"2026-01-01T00:00:00Z"}`
)

// formatAtrest formats dev the way the CLI will: a platform keyslot 0
// (PBKDF2-SHA512/1000) with its atrest token, and a recovery keyslot 1
// (Argon2id) with a systemd-recovery token.
func formatAtrest(t testing.TB, path string, opts luks2.FormatOptions) (*luks2.Header, *secret.Key) {
	t.Helper()
	dev := openDev(t, path)
	h, vk, err := luks2.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vk.Wipe)
	u, err := h.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddKeyslot(vk, key(t, platformPass), luks2.KeyslotOptions{Slot: 0, KDF: kdf.Platform()}); err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddKeyslot(vk, key(t, recoveryPass), luks2.KeyslotOptions{Slot: 1, KDF: smallArgon2(kdf.Argon2id)}); err != nil {
		t.Fatal(err)
	}
	if _, err := u.SetToken(0, []byte(atrestToken)); err != nil {
		t.Fatal(err)
	}
	if _, err := u.SetToken(1, []byte(`{"type":"systemd-recovery","keyslots":["1"]}`)); err != nil {
		t.Fatal(err)
	}
	h, err = u.Commit(ctx(t), dev)
	if err != nil {
		t.Fatal(err)
	}
	return h, vk
}

func TestCryptsetupAcceptsWhatAtrestFormats(t *testing.T) {
	requireTier(t)
	for _, sector := range []uint32{512, 4096} {
		t.Run("sector-"+strconv.Itoa(int(sector)), func(t *testing.T) {
			path := loopDevice(t, 64*mib)
			h, vk := formatAtrest(t, path, luks2.FormatOptions{
				Label: "data1", Subsystem: "atrest", SectorSize: sector,
				Flags: []string{luks2.FlagAllowDiscards, luks2.FlagNoReadWorkqueue, luks2.FlagNoWriteWorkqueue},
			})

			dump := cryptsetup(t, "", "luksDump", path)
			for _, want := range []string{"UUID:          \t" + h.UUID, "Label:         \tdata1", "Subsystem:     \tatrest",
				"allow-discards no-read-workqueue no-write-workqueue", "sector: " + strconv.Itoa(int(sector)) + " [bytes]",
				"0: atrest", "1: systemd-recovery", "PBKDF:      pbkdf2", "Hash:       sha512", "PBKDF:      argon2id"} {
				if !strings.Contains(dump, want) {
					t.Errorf("luksDump lacks %q:\n%s", want, dump)
				}
			}
			var meta map[string]any
			if err := json.Unmarshal([]byte(cryptsetup(t, "", "luksDump", "--dump-json-metadata", path)), &meta); err != nil {
				t.Fatal(err)
			}
			cfg := meta["config"].(map[string]any)
			if cfg["json_size"] != "12288" || cfg["keyslots_size"] != "16744448" {
				t.Errorf("config %v, want cryptsetup's default layout", cfg)
			}
			if off := meta["segments"].(map[string]any)["0"].(map[string]any)["offset"]; off != "16777216" {
				t.Errorf("data offset %v", off)
			}

			platform, recovery := keyFile(t, platformPass), keyFile(t, recoveryPass)
			cryptsetup(t, "", "open", "--test-passphrase", "--key-slot", "0", "--key-file", platform, path)
			cryptsetup(t, "", "open", "--test-passphrase", "--key-slot", "1", "--key-file", recovery, path)
			if _, _, err := runCryptsetup("", "open", "--test-passphrase", "--key-file", keyFile(t, "wrong"), path); err == nil {
				t.Error("cryptsetup accepted a wrong passphrase")
			}
			if got := dumpVolumeKey(t, path, platform); !bytes.Equal(got, vk.Bytes()) {
				t.Error("cryptsetup's volume key differs from atrest's")
			}
			if got := dumpVolumeKey(t, path, recovery); !bytes.Equal(got, vk.Bytes()) {
				t.Error("cryptsetup's volume key (recovery keyslot) differs from atrest's")
			}
			exported := strings.TrimSpace(cryptsetup(t, "", "token", "export", "--token-id", "0", path))
			if !jsonEqual(t, exported, atrestToken) {
				t.Errorf("token export %s, want %s", exported, atrestToken)
			}

			cryptsetup(t, "", "repair", path)
			after := read(t, openDev(t, path))
			if after.SeqID != h.SeqID || after.NeedsRepair() {
				t.Errorf("cryptsetup repair changed a sound header: seqid %d -> %d", h.SeqID, after.SeqID)
			}
		})
	}
}

func jsonEqual(t testing.TB, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}
