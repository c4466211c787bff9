package luks2

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

// opensAll returns a check that every keyslot opens with one of the
// passphrases and yields vk.
func opensAll(vk *secret.Key, passphrases ...string) func(*testing.T, *memDevice, *Header) {
	return func(t *testing.T, dev *memDevice, h *Header) {
		t.Helper()
		for _, id := range h.KeyslotIDs() {
			opened := false
			for _, p := range passphrases {
				got, err := h.OpenKeyslot(dev, id, pass(t, p))
				if errors.Is(err, ErrKeyRejected) {
					continue
				}
				if err != nil {
					t.Fatalf("keyslot %d: %v", id, err)
				}
				opened = got.Equal(vk)
				got.Wipe()
				break
			}
			if !opened {
				t.Fatalf("keyslot %d opens with none of %q", id, passphrases)
			}
		}
	}
}

func mustUpdate(t testing.TB, dev Device) (*Header, *Update) {
	t.Helper()
	h, err := Read(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	u, err := h.Begin()
	if err != nil {
		t.Fatal(err)
	}
	return h, u
}

const tokenA = `{"type":"atrest","keyslots":["0"],"kms":"local","key_version":1,"ciphertext":"old"}`

// rekeyBase is a formatted device with platform keyslot 0 ("platform") and
// its token 0.
func rekeyBase(t *testing.T) (*memDevice, *secret.Key) {
	dev, _, vk := formatted(t, FormatOptions{})
	_, u := mustUpdate(t, dev)
	if _, err := u.SetToken(0, []byte(tokenA)); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(context.Background(), dev); err != nil {
		t.Fatal(err)
	}
	return dev, vk
}

func TestCrashSafety(t *testing.T) {
	base, vk := rekeyBase(t)
	ctx := context.Background()

	addKeyslotAndToken := func(dev Device) error {
		_, u := mustUpdate(t, dev)
		id, err := u.AddKeyslot(vk, pass(t, "platform-2"), KeyslotOptions{Slot: AnySlot, KDF: kdf.Platform()})
		if err != nil {
			return err
		}
		if _, err := u.SetToken(AnyToken, []byte(`{"type":"atrest","keyslots":["`+itoa(id)+`"],"key_version":2,"ciphertext":"new"}`)); err != nil {
			return err
		}
		_, err = u.Commit(ctx, dev)
		return err
	}
	// After phase 1 of a rekey: slots 0 and 1, tokens 0 and 1.
	rotated := base.snapshot()
	if err := addKeyslotAndToken(rotated); err != nil {
		t.Fatal(err)
	}

	beforeRekey := backupOf(t, base)
	// A backup whose keyslot 1 differs from the rotated device's.
	other := base.snapshot()
	_, u := mustUpdate(t, other)
	if _, err := u.AddKeyslot(vk, pass(t, "backup-pass"), KeyslotOptions{Slot: 1, KDF: kdf.Platform()}); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(ctx, other); err != nil {
		t.Fatal(err)
	}
	otherSlot1 := backupOf(t, other)

	cases := []crashCase{
		{
			name:        "add keyslot and token",
			setup:       func(*testing.T) *memDevice { return base.snapshot() },
			op:          addKeyslotAndToken,
			passphrases: []string{"platform", "platform-2"},
			minSlots:    1,
		},
		{
			name:  "kill keyslot and remove token",
			setup: func(*testing.T) *memDevice { return rotated.snapshot() },
			op: func(dev Device) error {
				_, u := mustUpdate(t, dev)
				if err := u.KillKeyslot(0); err != nil {
					return err
				}
				if err := u.RemoveToken(0); err != nil {
					return err
				}
				_, err := u.Commit(ctx, dev)
				return err
			},
			passphrases: []string{"platform", "platform-2"},
			minSlots:    1,
		},
		{
			name:  "token update",
			setup: func(*testing.T) *memDevice { return base.snapshot() },
			op: func(dev Device) error {
				_, u := mustUpdate(t, dev)
				if _, err := u.SetToken(0, []byte(`{"type":"atrest","keyslots":["0"],"key_version":9,"ciphertext":"rewrapped"}`)); err != nil {
					return err
				}
				_, err := u.Commit(ctx, dev)
				return err
			},
			passphrases: []string{"platform"},
			minSlots:    1,
		},
		{
			name: "restore a backup taken before a rekey",
			setup: func(t *testing.T) *memDevice {
				dev := rotated.snapshot()
				_, u := mustUpdate(t, dev)
				if err := u.KillKeyslot(0); err != nil {
					t.Fatal(err)
				}
				if _, err := u.Commit(ctx, dev); err != nil {
					t.Fatal(err)
				}
				return dev
			},
			op: func(dev Device) error {
				_, err := Restore(ctx, dev, beforeRekey, RestoreOptions{})
				return err
			},
			passphrases: []string{"platform", "platform-2"},
			minSlots:    1,
		},
		{
			name:  "restore over keyslots the backup overwrites",
			setup: func(*testing.T) *memDevice { return rotated.snapshot() },
			op: func(dev Device) error {
				_, err := Restore(ctx, dev, otherSlot1, RestoreOptions{})
				return err
			},
			passphrases: []string{"platform", "platform-2", "backup-pass"},
			minSlots:    1,
		},
		repairCase("repair a damaged primary copy", rotated, BinaryHeaderSize+10),
		repairCase("repair a damaged secondary copy", rotated, DefaultMetadataSize+100),
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runCrashCase(t, c, opensAll(vk, c.passphrases...))
		})
	}
}

// repairCase damages one byte of a header copy of dev, then repairs it.
func repairCase(name string, dev *memDevice, off int64) crashCase {
	return crashCase{
		name: name,
		setup: func(*testing.T) *memDevice {
			d := dev.snapshot()
			d.flip(off)
			return d
		},
		op: func(d Device) error {
			_, err := Repair(context.Background(), d)
			return err
		},
		passphrases: []string{"platform", "platform-2"},
		minSlots:    2,
		sameJSON:    true,
	}
}

func backupOf(t *testing.T, dev *memDevice) *memDevice {
	t.Helper()
	var b bytes.Buffer
	if _, err := Backup(context.Background(), dev, &b); err != nil {
		t.Fatal(err)
	}
	return memFromBytes(b.Bytes())
}

func itoa(n int) string { return string(rune('0' + n)) }
