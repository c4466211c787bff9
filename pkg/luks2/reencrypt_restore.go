package luks2

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrBackupStale: a header backup does not describe the data on the
// device as it is now: its volume keys or segments differ, because the
// volume was re-encrypted (or a re-encryption progressed) since the
// backup was taken. Restored, its key would not decrypt the data
// re-encrypted since.
var ErrBackupStale = errors.New("luks2: the header backup predates a re-encryption of the data")

// checkDataKeys reports ErrBackupStale unless bk assigns the same volume
// key (digest) to the same data ranges as cur: the regular segments, in
// order, with their offsets, sizes and the digests bound to them. A
// device in re-encryption takes only a backup of the same step: even
// before any data moved, restoring an older header would abandon the
// re-encryption (and the new recovery key shown for it).
func checkDataKeys(cur, bk *Header) error {
	a, b := cur.regularSegments(), bk.regularSegments()
	cst, _ := cur.Reencryption()
	bst, _ := bk.Reencryption()
	explain := func() error {
		if cst != nil {
			if bst != nil {
				return fmt.Errorf("%w: it was taken after %d bytes of the re-encryption under way, the device is at %d", ErrBackupStale, bst.Done, cst.Done)
			}
			return fmt.Errorf("%w: a re-encryption has started since it was taken (%d bytes are under the new key); finish it first", ErrBackupStale, cst.Done)
		}
		return fmt.Errorf("%w: the volume key in it is not the device's (the volume was re-encrypted since it was taken)", ErrBackupStale)
	}
	if len(a) != len(b) || (cst != nil) != (bst != nil) {
		return explain()
	}
	for i := range a {
		if a[i].Offset != b[i].Offset || a[i].Size != b[i].Size || a[i].Dynamic != b[i].Dynamic {
			return explain()
		}
		da, db := cur.DigestForSegment(a[i].ID), bk.DigestForSegment(b[i].ID)
		if da == nil || db == nil || !bytes.Equal(da.Salt, db.Salt) || !bytes.Equal(da.Value, db.Value) {
			return explain()
		}
	}
	return nil
}
