package luks2

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/pkg/secret"
)

// A re-encryption started with keyslots for new secrets only (a policy
// volume's: one secret per key) and a new recovery passphrase enrolled
// under both keys (startTwoSecrets): each keyslot opens in the header under re-encryption
// to its own key, the two secrets together give both keys, the recovery
// passphrase alone does too, and cryptsetup reencrypt --resume-only
// finishes with it. At the end the recovery passphrase's old-key keyslot
// is gone and its new one opens the new key.
func TestReencryptKeyslotsOfBothKeys(t *testing.T) {
	dev, oldVK, plain := reencBase(t)
	newVK, err := startTwoSecrets(t, dev, oldVK)
	if err != nil {
		t.Fatal(err)
	}
	h, err := Read(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	newSlot, recNew, recOld := h.Tokens[1].Keyslots[0], h.Tokens[2].Keyslots[0], h.Tokens[2].Keyslots[1]
	for _, c := range []struct {
		slot   int
		pass   string
		isNew  bool
		wantVK string
	}{{0, "platform", false, "old"}, {recOld, "recovery", false, "old"}, {newSlot, "new-branch", true, "new"}, {recNew, "recovery", true, "new"}} {
		vk, isNew, err := h.OpenReencryptKeyslot(dev, c.slot, pass(t, c.pass))
		if err != nil {
			t.Fatalf("keyslot %d: %v", c.slot, err)
		}
		want := oldVK
		if c.wantVK == "new" {
			want = newVK
		}
		if isNew != c.isNew || !vk.Equal(want) {
			t.Fatalf("keyslot %d opens the %s key (new: %v)", c.slot, c.wantVK, isNew)
		}
		vk.Wipe()
	}
	if _, _, err := h.OpenReencryptKeyslot(dev, newSlot, pass(t, "platform")); !errors.Is(err, ErrKeyRejected) {
		t.Fatalf("a wrong passphrase: %v, want ErrKeyRejected", err)
	}
	if _, err := h.OpenReencryptKeys(dev, pass(t, "platform")); !errors.Is(err, ErrKeyRejected) {
		t.Fatalf("the old secret alone: %v, want ErrKeyRejected (it opens no keyslot of the new key)", err)
	}
	for _, ps := range [][]string{{"platform", "new-branch"}, {"recovery"}} {
		var passes []*secret.Key
		for _, p := range ps {
			passes = append(passes, pass(t, p))
		}
		k, err := h.OpenReencryptKeys(dev, passes...)
		if err != nil {
			t.Fatalf("%v: %v", ps, err)
		}
		if !k.Old.Equal(oldVK) || !k.New.Equal(newVK) {
			t.Fatalf("%v: wrong keys", ps)
		}
		k.Wipe()
	}
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		t.Log("cryptsetup not installed: the hand-over with the recovery passphrase is not checked")
		return
	}
	dir := t.TempDir()
	img := imageOf(t, dev, dir, "both.img")
	kf := filepath.Join(dir, "rec")
	if err := os.WriteFile(kf, []byte("recovery"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cryptsetup(t, "reencrypt", "--resume-only", "--force-offline-reencrypt", "--key-file", kf, img); err != nil {
		t.Fatalf("cryptsetup reencrypt --resume-only with the recovery passphrase: %v\n%s", err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	done := memFromBytes(b)
	h, err = Read(context.Background(), done)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := h.Reencryption(); st != nil || h.Keyslots[recOld] != nil || h.Keyslots[0] != nil {
		t.Fatalf("after cryptsetup: state %+v, keyslots %v; want the old key's keyslots gone", st, h.KeyslotIDs())
	}
	vk, err := h.OpenKeyslot(done, recNew, pass(t, "recovery"))
	if err != nil || !vk.Equal(newVK) {
		t.Fatalf("the recovery keyslot after cryptsetup: %v", err)
	}
	vk.Wipe()
	if !bytes.Equal(readPlain(t, done, newVK), plain) {
		t.Fatal("plaintext changed")
	}
}
