package luks2

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

// TestOpenKeyslotsAsOneByOne: a batch of 21 keyslot opens over seven
// volumes gives every job what OpenKeyslot gives it alone: the volume
// key of its own volume for its passphrase (PBKDF2-SHA512 keyslots,
// derived in lanes, and a PBKDF2-SHA256 and an Argon2id one, alone), and
// for a wrong passphrase, a keyslot that does not exist, an unbound
// keyslot and another volume's device the same refusal.
func TestOpenKeyslotsAsOneByOne(t *testing.T) {
	type vol struct {
		dev *memDevice
		h   *Header
		vk  *secret.Key
	}
	var vols []vol
	for i := range 7 {
		dev, _, vk := formatted(t, FormatOptions{})
		_, u := mustUpdate(t, dev)
		if _, err := u.AddKeyslot(vk, pass(t, fmt.Sprint("second-", i)), KeyslotOptions{Slot: 1, KDF: kdf.Platform()}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if _, err := u.AddKeyslot(vk, pass(t, "sha256"), KeyslotOptions{Slot: 2, KDF: kdf.Params{Type: kdf.PBKDF2, Hash: "sha256", Iterations: 1000}}); err != nil {
				t.Fatal(err)
			}
			if _, err := u.AddKeyslot(vk, pass(t, "argon"), KeyslotOptions{Slot: 3, KDF: kdf.Params{Type: kdf.Argon2id, Time: 1, Memory: 64, CPUs: 1}}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := u.Commit(context.Background(), dev); err != nil {
			t.Fatal(err)
		}
		vols = append(vols, vol{dev, read(t, dev), vk})
	}
	var jobs []KeyslotJob
	for i, v := range vols {
		jobs = append(jobs,
			KeyslotJob{v.h, v.dev, 0, pass(t, "platform")},
			KeyslotJob{v.h, v.dev, 1, pass(t, fmt.Sprint("second-", i))})
	}
	unbound, _ := unboundImage(t)
	jobs = append(jobs,
		KeyslotJob{vols[0].h, vols[0].dev, 2, pass(t, "sha256")},
		KeyslotJob{vols[0].h, vols[0].dev, 3, pass(t, "argon")},
		KeyslotJob{vols[1].h, vols[1].dev, 1, pass(t, "second-2")}, // another volume's passphrase
		KeyslotJob{vols[2].h, vols[2].dev, 6, pass(t, "platform")}, // no keyslot 6
		KeyslotJob{vols[3].h, vols[4].dev, 0, pass(t, "platform")}, // another volume's device
		KeyslotJob{read(t, unbound), unbound, 1, pass(t, "unbound")},
		KeyslotJob{vols[5].h, vols[5].dev, 1, pass(t, "platform")},
	)
	keys, errs := OpenKeyslots(jobs)
	for i, j := range jobs {
		want, werr := j.Header.OpenKeyslot(j.Dev, j.Slot, j.Passphrase)
		switch {
		case werr != nil && errs[i] == nil:
			t.Errorf("job %d (keyslot %d): opened in the batch, alone: %v", i, j.Slot, werr)
		case werr == nil && errs[i] != nil:
			t.Errorf("job %d (keyslot %d): %v in the batch, alone it opens", i, j.Slot, errs[i])
		case werr != nil && (errors.Is(werr, ErrKeyRejected) != errors.Is(errs[i], ErrKeyRejected) || errors.Is(werr, ErrNoSuchKeyslot) != errors.Is(errs[i], ErrNoSuchKeyslot)):
			t.Errorf("job %d (keyslot %d): %v in the batch, %v alone", i, j.Slot, errs[i], werr)
		case werr == nil && !keys[i].Equal(want):
			t.Errorf("job %d (keyslot %d): the batch gave another key", i, j.Slot)
		}
		want.Wipe()
		keys[i].Wipe()
	}
	opened := 0
	for i := range 14 {
		if errs[i] != nil {
			t.Errorf("job %d: %v", i, errs[i])
		} else {
			opened++
		}
	}
	if opened != 14 || errs[14] != nil || errs[15] != nil {
		t.Fatalf("%d of the 14 PBKDF2-SHA512 opens worked; SHA-256: %v, Argon2id: %v", opened, errs[14], errs[15])
	}
	for i := 16; i < len(jobs); i++ {
		if errs[i] == nil {
			t.Errorf("job %d (keyslot %d) opened", i, jobs[i].Slot)
		}
	}
}
