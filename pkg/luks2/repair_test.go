package luks2

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// lvmLabel is an LVM2 physical volume label for sector 1, as pvcreate
// writes it (pvs and libblkid look for "LABELONE" with its sector number
// and the "LVM2 001" type).
func lvmLabel() []byte {
	l := make([]byte, 512)
	copy(l, "LABELONE")
	binary.LittleEndian.PutUint64(l[8:], 1)
	copy(l[0x18:], "LVM2 001")
	copy(l[0x20:], "0123456789abcdefghijklmnopqrstuv")
	return l
}

// TestForeignSignatureBlocksRepair: a device whose first sectors now hold
// an LVM label, with an old LUKS2 secondary copy behind it, is not a LUKS2
// volume with a damaged primary. cryptsetup refuses it ("ambiguous
// signatures, cannot auto-recover"); a repair would write a LUKS2 header
// over the LVM label.
func TestForeignSignatureBlocksRepair(t *testing.T) {
	ctx := context.Background()
	dev, _, _ := formatted(t, FormatOptions{})
	dev.WriteAt(lvmLabel(), 512)
	before := dev.bytesOf()[:DefaultMetadataSize]

	_, err := Read(ctx, dev)
	if !errors.Is(err, ErrAmbiguousSignatures) || !strings.Contains(err.Error(), "LVM2_member") {
		t.Fatalf("Read: %v, want ErrAmbiguousSignatures naming LVM2_member", err)
	}
	_, err = Repair(ctx, dev)
	if !errors.Is(err, ErrAmbiguousSignatures) || !strings.Contains(err.Error(), "LVM2_member") {
		t.Fatalf("Repair: %v, want ErrAmbiguousSignatures naming LVM2_member", err)
	}
	if !bytes.Equal(dev.bytesOf()[:DefaultMetadataSize], before) {
		t.Fatal("Repair wrote over the LVM label")
	}
	backup := backupOf(t, func() *memDevice { d, _, _ := formatted(t, FormatOptions{}); return d }())
	if _, err := Restore(ctx, dev, backup, RestoreOptions{}); err == nil {
		t.Fatal("Restore without Force wrote over the LVM label")
	}
	// Without the label, damage there is an ordinary damaged primary.
	dev.WriteAt(make([]byte, 512), 512)
	dev.flip(600)
	if h, err := Repair(ctx, dev); err != nil || h.Copies[0].Valid {
		t.Fatalf("repair of a damaged primary: %v", err)
	}
	if h, err := Read(ctx, dev); err != nil || h.NeedsRepair() {
		t.Fatalf("after repair: %v", err)
	}
}

// TestForeignSignatureBesideOlderCopy: cryptsetup probes for other
// signatures whenever a copy needs recovery, an older one included: a
// btrfs superblock in the keyslots area beside an interrupted commit is
// as ambiguous as an LVM label over the primary.
func TestForeignSignatureBesideOlderCopy(t *testing.T) {
	ctx := context.Background()
	base, _ := rekeyBase(t)
	dev := halfCommitted(t, base, func(d Device) error {
		_, u := mustUpdate(t, d)
		if _, err := u.SetToken(0, []byte(`{"type":"atrest","keyslots":["0"],"key_version":2}`)); err != nil {
			return err
		}
		_, err := u.Commit(ctx, d)
		return err
	})
	sb := make([]byte, 0x100)
	copy(sb[0x40:], "_BHRfS_M")
	binary.LittleEndian.PutUint32(sb[0x90:], 4096) // sectorsize
	dev.WriteAt(sb, 0x10000)
	if _, err := Read(ctx, dev); !errors.Is(err, ErrAmbiguousSignatures) || !strings.Contains(err.Error(), "btrfs") {
		t.Fatalf("Read: %v, want ErrAmbiguousSignatures naming btrfs", err)
	}
	if _, err := Repair(ctx, dev); !errors.Is(err, ErrAmbiguousSignatures) {
		t.Fatalf("Repair: %v", err)
	}
	// Both copies current: nothing needs recovery, nothing is ambiguous
	// (cryptsetup reads such a device too).
	clean := base.snapshot()
	clean.WriteAt(sb, 0x10000)
	if _, err := Read(ctx, clean); err != nil {
		t.Fatalf("current copies: %v", err)
	}
}
