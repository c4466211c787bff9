package luks2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
)

// backupAlign is what cryptsetup pads a header backup to (its page size).
const backupAlign = 4096

// Backup writes a header backup of dev to w in `cryptsetup
// luksHeaderBackup`'s format: the device's first AreasEnd bytes (both
// header copies and the keyslots area) as they are, zero-padded to a
// multiple of 4096 bytes. Either tool restores the other's backups. The
// backup holds keyslots: whoever has it and an old passphrase can open the
// volume, so keep it like a key.
func Backup(ctx context.Context, dev Reader, w io.Writer) (int64, error) {
	h, release, err := readShared(ctx, dev)
	if err != nil {
		return 0, err
	}
	defer release()
	end := h.AreasEnd()
	buf := make([]byte, roundUp(end, backupAlign))
	if _, err := dev.ReadAt(buf[:end], 0); err != nil {
		return 0, fmt.Errorf("luks2: read header and keyslots area: %w", err)
	}
	n, err := w.Write(buf)
	if err != nil {
		return int64(n), fmt.Errorf("luks2: write backup: %w", err)
	}
	return int64(n), nil
}

// BackupSparse writes a header backup of dev into f, a new empty file,
// keeping only what a restore needs: both header copies and every keyslot
// area either copy references, at their offsets on the device. It returns
// the backup's size (AreasEnd rounded up to 4096 bytes), which the caller
// truncates f to; the rest of the keyslots area, which no keyslot uses,
// is a hole and reads as zeros, as are 4 KiB blocks of zeros within what
// is kept (the JSON areas' padding). So a backup costs reading and
// writing the header and its keyslots (about 300 KiB for one 512-bit
// keyslot), not the whole 16 MiB. The file is in luksHeaderBackup's
// format and restores with either tool; it differs from Backup's output
// only where the device holds bytes no header references, which a restore
// of it zeroes. known, when not nil, is the header the caller last read
// or committed: when dev still holds its copies byte for byte (Reread),
// they are not parsed again.
func BackupSparse(ctx context.Context, dev Reader, f io.WriterAt, known *Header) (int64, error) {
	release, err := lock(ctx, dev, false)
	if err != nil {
		return 0, err
	}
	defer release()
	h, err := reread(ctx, dev, known)
	if err != nil {
		return 0, err
	}
	regions := []Area{{Offset: 0, Size: 2 * h.MetadataSize}}
	for _, a := range h.referencedAreas() {
		if a.Offset >= 2*h.MetadataSize && a.Offset+a.Size <= h.AreasEnd() {
			regions = append(regions, a)
		}
	}
	slices.SortFunc(regions, func(a, b Area) int { return compareU64(a.Offset, b.Offset) })
	var zero [backupAlign]byte
	bp := sparseBufs.Get().(*[]byte)
	defer sparseBufs.Put(bp)
	buf := *bp
	done := uint64(0) // regions may overlap (both copies name one area)
	for _, r := range regions {
		for off := max(r.Offset, done); off < r.Offset+r.Size; {
			n := min(uint64(len(buf)), r.Offset+r.Size-off)
			if _, err := dev.ReadAt(buf[:n], int64(off)); err != nil {
				return 0, fmt.Errorf("luks2: read header and keyslots at %d: %w", off, err)
			}
			// One write per run of blocks that are not all zeros.
			for b := uint64(0); b < n; {
				end := b
				for end < n && !bytes.Equal(buf[end:min(end+backupAlign, n)], zero[:min(backupAlign, n-end)]) {
					end = min(end+backupAlign, n)
				}
				if end > b {
					if _, err := f.WriteAt(buf[b:end], int64(off+b)); err != nil {
						return 0, fmt.Errorf("luks2: write backup: %w", err)
					}
				}
				b = min(end+backupAlign, n)
			}
			off += n
			done = off
		}
	}
	return int64(roundUp(h.AreasEnd(), backupAlign)), nil
}

// sparseBufs recycles BackupSparse's read buffers: 256 KiB, a 512-bit
// key's keyslot area in one read. (They hold what the device holds there,
// the header and encrypted keyslot areas, as the backup file does.)
var sparseBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// readShared reads dev's header under a shared lock, which the caller
// releases once it has read what it needs.
func readShared(ctx context.Context, dev Reader) (*Header, func(), error) {
	release, err := lock(ctx, dev, false)
	if err != nil {
		return nil, nil, err
	}
	h, err := readHeader(ctx, dev)
	if err != nil {
		release()
		return nil, nil, err
	}
	return h, release, nil
}

// BackupFile writes a header backup to a new file at path, created
// exclusively and readable by its owner only (0400), as cryptsetup does.
func BackupFile(ctx context.Context, dev Reader, path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return fmt.Errorf("luks2: create backup: %w", err)
	}
	_, err = Backup(ctx, dev, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// Force restores a backup whose UUID differs from the device's header,
	// onto a device without a readable LUKS2 header, or a backup that
	// predates a re-encryption (ErrBackupStale: the data re-encrypted
	// since does not decrypt under it).
	Force bool
}

// Restore writes a header backup (from either tool) back to dev. The backup
// must hold a valid LUKS2 header. When dev has one, both must agree on the
// data offset and the size of header plus keyslots area (as cryptsetup
// requires) and, unless Force is set, on the UUID (ErrUUIDMismatch); a
// device with no readable header, or a damaged one whose UUID cannot be
// compared, is restored only with Force.
//
// The restore is crash-safe: keyslots of the current header whose areas the
// backup's keyslots would overwrite are first dropped from it in a normal
// commit; then the backup's keyslot areas are written and synced; then its
// header is committed with a sequence id above the current one; only then is
// the rest of the keyslots area made equal to the backup. At every instant
// the device opens with a current keyslot that is still intact or with the
// backup's keyslots. (When the backup overwrites the area of every current
// keyslot, there is a moment where only the backup's keyslots will do; the
// backup file still restores the device then.)
func Restore(ctx context.Context, dev Device, backup Reader, opts RestoreOptions) (*Header, error) {
	bk, err := readHeader(ctx, backup)
	if err != nil {
		return nil, fmt.Errorf("luks2: backup: %w", err)
	}
	for _, r := range bk.Config.Requirements {
		if !isOnlineReencrypt(r) {
			return nil, fmt.Errorf("luks2: backup lists requirement %q; refusing to restore it", r)
		}
	}
	end := bk.AreasEnd()
	release, err := lock(ctx, dev, true)
	if err != nil {
		return nil, err
	}
	defer release()
	cur, err := readHeader(ctx, dev)
	if err := checkRestoreTarget(dev, cur, err, bk, opts); err != nil {
		return nil, err
	}
	if size, err := dev.Size(); err != nil || uint64(size) < end {
		return nil, fmt.Errorf("%w: the backup needs %d bytes", ErrDeviceTooSmall, end)
	}
	// Phase A: drop current keyslots the backup's keyslots will overwrite.
	seq := bk.SeqID
	if cur != nil {
		curSeq := max(cur.Copies[0].SeqID, cur.Copies[1].SeqID)
		if inter := cur.withoutOverwritten(dev, backup, bk); inter != nil {
			curSeq++
			copies, err := inter.render(curSeq)
			if err != nil {
				return nil, err
			}
			if err := writeHeaders(dev, copies); err != nil {
				return nil, err
			}
		}
		seq = max(seq, curSeq+1)
	}
	// Phase B: the backup's keyslot areas.
	for _, id := range bk.KeyslotIDs() {
		a := bk.Keyslots[id].Area
		if err := writeChanged(dev, backup, a.Offset, a.Offset+a.Size); err != nil {
			return nil, err
		}
	}
	if err := dev.Sync(); err != nil {
		return nil, fmt.Errorf("luks2: sync: %w", err)
	}
	// Phase C: the backup's header, above every sequence id on the device.
	copies, err := bk.render(seq)
	if err != nil {
		return nil, err
	}
	if err := writeHeaders(dev, copies); err != nil {
		return nil, err
	}
	// Phase D: the rest of the keyslots area, now unreferenced, so that it
	// matches the backup byte for byte.
	if err := writeChanged(dev, backup, 2*bk.MetadataSize, end); err != nil {
		return nil, err
	}
	if err := dev.Sync(); err != nil {
		return nil, fmt.Errorf("luks2: sync: %w", err)
	}
	return readHeader(ctx, dev)
}

// RestoreFile restores the backup file at path.
func RestoreFile(ctx context.Context, dev Device, path string, opts RestoreOptions) (*Header, error) {
	f, err := OpenFile(path, false)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Restore(ctx, dev, f, opts)
}

func checkRestoreTarget(dev Reader, cur *Header, readErr error, bk *Header, opts RestoreOptions) error {
	switch {
	case readErr == nil:
		if cur.UUID != bk.UUID && !opts.Force {
			return fmt.Errorf("%w: device %s, backup %s", ErrUUIDMismatch, cur.UUID, bk.UUID)
		}
		if a, b := cur.minSegmentOffset(), bk.minSegmentOffset(); a != b {
			return fmt.Errorf("luks2: data offset differs on device (%d) and in backup (%d)", a, b)
		}
		if cur.AreasEnd() != bk.AreasEnd() {
			return fmt.Errorf("luks2: header and keyslots area size differs on device (%d) and in backup (%d)", cur.AreasEnd(), bk.AreasEnd())
		}
		if cur.UUID == bk.UUID && !opts.Force {
			return checkDataKeys(cur, bk)
		}
	case errors.Is(readErr, ErrHeaderDamaged):
		uuids := damagedUUIDs(dev)
		if opts.Force {
			return nil
		}
		if len(uuids) == 0 {
			return fmt.Errorf("%w: the damaged header shows no UUID to compare; use force", ErrUUIDMismatch)
		}
		for _, u := range uuids {
			if u != bk.UUID {
				return fmt.Errorf("%w: device %s, backup %s", ErrUUIDMismatch, u, bk.UUID)
			}
		}
	case errors.Is(readErr, ErrHeaderUnreadable):
		// A disk remaps a sector that fails its reads when it is written:
		// restoring the backup is how such a header comes back.
		if !opts.Force {
			return fmt.Errorf("luks2: refusing to restore onto a device whose header cannot be read (%w) unless forced", readErr)
		}
	case errors.Is(readErr, ErrNotLUKS), errors.Is(readErr, ErrLUKS1), errors.Is(readErr, ErrAmbiguousSignatures):
		if !opts.Force {
			return fmt.Errorf("luks2: refusing to restore onto a device without a LUKS2 header (%v) unless forced", readErr)
		}
	default:
		return readErr
	}
	return nil
}

// damagedUUIDs returns the UUIDs the binary headers of a damaged header
// still show.
func damagedUUIDs(dev Reader) []string {
	var out []string
	offsets := append([]uint64{0}, secondaryOffsets...)
	for i, off := range offsets {
		raw := make([]byte, BinaryHeaderSize)
		if _, err := dev.ReadAt(raw, int64(off)); err != nil {
			continue
		}
		b := decodeBin(raw)
		want := magicSecondary
		if i == 0 {
			want = magicPrimary
		}
		if bytes.Equal(b.magic, want) && b.uuid != "" && !slices.Contains(out, b.uuid) {
			out = append(out, b.uuid)
		}
	}
	return out
}

// withoutOverwritten returns h minus the keyslots whose areas overlap a
// backup keyslot area that differs from what the device holds, or nil when
// no keyslot a reader of the device may use is affected. When only the
// other (older) copy names an affected area, h is returned unchanged: the
// commit of it replaces that copy before the area is overwritten.
func (h *Header) withoutOverwritten(dev, backup io.ReaderAt, bk *Header) *Header {
	var changed []Area
	for _, k := range bk.Keyslots {
		if a := k.Area; differs(dev, backup, a.Offset, a.Size) {
			changed = append(changed, a)
		}
	}
	overlaps := func(a Area) bool {
		for _, c := range changed {
			if a.Offset < c.Offset+c.Size && c.Offset < a.Offset+a.Size {
				return true
			}
		}
		return false
	}
	var hit []int
	for _, id := range h.KeyslotIDs() {
		if overlaps(h.Keyslots[id].Area) {
			hit = append(hit, id)
		}
	}
	if len(hit) == 0 && !slices.ContainsFunc(h.referencedAreas(), overlaps) {
		return nil
	}
	inter := h.Clone()
	for _, id := range hit {
		delete(inter.Keyslots, id)
		for _, d := range inter.Digests {
			d.Keyslots = slices.DeleteFunc(d.Keyslots, func(k int) bool { return k == id })
		}
		for _, t := range inter.Tokens {
			t.Keyslots = slices.DeleteFunc(t.Keyslots, func(k int) bool { return k == id })
		}
	}
	return inter
}

// differs reports whether dev and backup hold different bytes in
// [off, off+n) (or cannot be read there).
func differs(dev, backup io.ReaderAt, off, n uint64) bool {
	a, b := make([]byte, n), make([]byte, n)
	if _, err := dev.ReadAt(a, int64(off)); err != nil {
		return true
	}
	if _, err := backup.ReadAt(b, int64(off)); err != nil {
		return true
	}
	return !bytes.Equal(a, b)
}

// writeChanged copies backup[from:to] to dev, skipping 64 KiB chunks the
// device already holds.
func writeChanged(dev Device, backup io.ReaderAt, from, to uint64) error {
	const chunk = 64 << 10
	cur, want := make([]byte, chunk), make([]byte, chunk)
	for off := from; off < to; off += chunk {
		n := min(chunk, to-off)
		if _, err := backup.ReadAt(want[:n], int64(off)); err != nil {
			return fmt.Errorf("luks2: read backup at %d: %w", off, err)
		}
		if _, err := dev.ReadAt(cur[:n], int64(off)); err == nil && bytes.Equal(cur[:n], want[:n]) {
			continue
		}
		if _, err := dev.WriteAt(want[:n], int64(off)); err != nil {
			return fmt.Errorf("luks2: write keyslots area at %d: %w", off, err)
		}
	}
	return nil
}
