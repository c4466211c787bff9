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
	restoreOtherSlot1 := func(dev Device) error {
		_, err := Restore(ctx, dev, otherSlot1, RestoreOptions{})
		return err
	}
	kill := func(ids ...int) func(Device) error {
		return func(dev Device) error {
			_, u := mustUpdate(t, dev)
			for _, id := range ids {
				if err := u.KillKeyslot(id); err != nil {
					return err
				}
			}
			_, err := u.Commit(ctx, dev)
			return err
		}
	}

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
			name:        "restore over keyslots the backup overwrites",
			setup:       func(*testing.T) *memDevice { return rotated.snapshot() },
			op:          restoreOtherSlot1,
			passphrases: []string{"platform", "platform-2", "backup-pass"},
			minSlots:    1,
		},
		{
			// The older secondary still names keyslot 0's area: a new
			// keyslot written there would leave that copy, which a
			// reader falls back to, without a working keyslot 0.
			name:  "add keyslot beside an older copy left by an interrupted kill",
			setup: func(t *testing.T) *memDevice { return halfCommitted(t, rotated, kill(0)) },
			op: func(dev Device) error {
				_, u := mustUpdate(t, dev)
				if _, err := u.AddKeyslot(vk, pass(t, "platform-3"), KeyslotOptions{Slot: AnySlot, KDF: kdf.Platform()}); err != nil {
					return err
				}
				_, err := u.Commit(ctx, dev)
				return err
			},
			passphrases: []string{"platform", "platform-2", "platform-3"},
			minSlots:    1,
		},
		{
			name:        "restore beside an older copy left by an interrupted kill",
			setup:       func(t *testing.T) *memDevice { return halfCommitted(t, rotated, kill(1)) },
			op:          restoreOtherSlot1,
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

// halfCommitted returns a copy of dev on which op lost power right after
// the primary copy was synced: the primary holds the new header, the
// secondary the old one.
func halfCommitted(t *testing.T, dev *memDevice, op func(Device) error) *memDevice {
	t.Helper()
	d := &stopDevice{memDevice: dev.snapshot(), syncs: 1}
	if err := deterministic(op)(d); !errors.Is(err, errPowerLoss) {
		t.Fatalf("interrupted commit: %v", err)
	}
	h, err := Read(context.Background(), d.memDevice)
	if err != nil || h.other == nil || h.Copies[0].SeqID <= h.Copies[1].SeqID {
		t.Fatalf("interrupted commit left %+v (%v)", h.Copies, err)
	}
	return d.memDevice
}

// TestFailedCommitWipesKilledKeyslot: a commit whose secondary copy cannot
// be written has still put the new header in place (the primary wins);
// the keyslot it removes must not stay usable.
func TestFailedCommitWipesKilledKeyslot(t *testing.T) {
	base, vk := rekeyBase(t)
	ctx := context.Background()
	_, u := mustUpdate(t, base)
	if _, err := u.AddKeyslot(vk, pass(t, "platform-2"), KeyslotOptions{Slot: 1, KDF: kdf.Platform()}); err != nil {
		t.Fatal(err)
	}
	before, err := u.Commit(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	// Writes of the kill: primary JSON area, primary binary header, then
	// the secondary's JSON area, which fails.
	dev := &faultDevice{memDevice: base.snapshot(), fail: 2}
	_, u = mustUpdate(t, dev)
	if err := u.KillKeyslot(0); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(ctx, dev); !errors.Is(err, errInjectedIO) {
		t.Fatalf("commit: %v, want the injected error", err)
	}
	h, err := Read(ctx, dev.memDevice)
	if err != nil || h.Keyslots[0] != nil || h.Keyslots[1] == nil {
		t.Fatalf("after the failed commit: %v", err)
	}
	opensAll(vk, "platform-2")(t, dev.memDevice, h)
	if got, err := before.OpenKeyslot(dev.memDevice, 0, pass(t, "platform")); !errors.Is(err, ErrKeyRejected) {
		if err == nil {
			got.Wipe()
		}
		t.Fatalf("the killed keyslot still opens from its old header: %v", err)
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
