package luks2

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"

	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/luks2/luks2test"
	"github.com/atrest/atrest/pkg/secret"
)

// TestOpenKeyslotsAsOneByOne: a batch of 21 keyslot opens over seven
// volumes gives every job what OpenKeyslot gives it alone: the volume
// key of its own volume for its passphrase (PBKDF2-SHA512 keyslots,
// derived in lanes, and a PBKDF2-SHA256 and an Argon2id one, alone), and
// for a wrong passphrase, a keyslot that does not exist, an unbound
// keyslot and another volume's device the same refusal. Two volumes'
// digests are as cryptsetup may write them (more iterations; a 20-byte
// value), so that some digests pair for their checks and some do not.
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
		switch i {
		case 3:
			dev = redigest(t, dev, vk, 1500, 32)
		case 4:
			dev = redigest(t, dev, vk, 1000, 20)
		}
		vols = append(vols, vol{dev, read(t, dev), vk})
	}
	// Every volume's platform keyslot, then every second one: neighbours
	// in a lane group are keyslots of different volumes.
	var jobs []KeyslotJob
	for _, v := range vols {
		jobs = append(jobs, KeyslotJob{v.h, v.dev, 0, pass(t, "platform")})
	}
	for i, v := range vols {
		jobs = append(jobs, KeyslotJob{v.h, v.dev, 1, pass(t, fmt.Sprint("second-", i))})
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

// redigest rewrites digest 0 of dev for vk with iterations and a value of
// size bytes (cryptsetup benchmarks its digests' iterations and accepts
// 20-byte values) and returns the device with that header.
func redigest(t *testing.T, dev *memDevice, vk *secret.Key, iterations, size int) *memDevice {
	t.Helper()
	img := dev.bytesOf()
	if err := luks2test.Rewrite(img, func(doc map[string]any) {
		d := luks2test.Obj(doc, "digests", "0")
		salt, err := base64.StdEncoding.DecodeString(d["salt"].(string))
		if err != nil {
			t.Fatal(err)
		}
		sum, err := kdf.PBKDF2Key("sha256", vk, salt, iterations, size)
		if err != nil {
			t.Fatal(err)
		}
		defer sum.Wipe()
		d["iterations"], d["digest"] = iterations, base64.StdEncoding.EncodeToString(sum.Bytes())
	}); err != nil {
		t.Fatal(err)
	}
	return memFromBytes(img)
}

// TestVerifyPair: two volume keys checked at once give what each gives
// alone (a wrong key is refused, its partner accepted), and digests with
// different iterations are left to be checked one by one.
func TestVerifyPair(t *testing.T) {
	_, h1, vk1 := formatted(t, FormatOptions{})
	dev2, _, vk2 := formatted(t, FormatOptions{})
	d1, d2 := h1.Digests[0], read(t, redigest(t, dev2, vk2, 1000, 20)).Digests[0]
	scratch := make([]byte, pairScratch)
	for _, c := range []struct {
		name string
		vk   [2]*secret.Key
		want [2]error
	}{
		{"both right", [2]*secret.Key{vk1, vk2}, [2]error{nil, nil}},
		{"first wrong", [2]*secret.Key{vk2, vk2}, [2]error{ErrWrongVolumeKey, nil}},
		{"second wrong", [2]*secret.Key{vk1, vk1}, [2]error{nil, ErrWrongVolumeKey}},
	} {
		errs, ok := verifyPair([2]*Digest{d1, d2}, c.vk, scratch)
		if !ok || errs != c.want {
			t.Errorf("%s: %v %v, want %v", c.name, errs, ok, c.want)
		}
		for j := range 2 {
			alone := [2]*Digest{d1, d2}[j].verify(c.vk[j])
			if alone != c.want[j] {
				t.Errorf("%s: key %d alone: %v, want %v", c.name, j, alone, c.want[j])
			}
		}
	}
	d3 := read(t, redigest(t, dev2, vk2, 1500, 32)).Digests[0]
	if _, ok := verifyPair([2]*Digest{d1, d3}, [2]*secret.Key{vk1, vk2}, scratch); ok {
		t.Error("digests of 1000 and 1500 iterations paired")
	}
	if err := d3.verify(vk2); err != nil {
		t.Errorf("the 1500-iteration digest alone: %v", err)
	}
}
