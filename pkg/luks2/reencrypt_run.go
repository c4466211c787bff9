package luks2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"slices"

	"github.com/atrest/atrest/pkg/secret"
)

// DefaultHotzone is the most data one step of an offline re-encryption
// re-encrypts (cryptsetup allows up to 1 GiB; the buffer is held in memory).
const DefaultHotzone = 64 << 20

// Reencryptor runs a re-encryption a header records, offline: the data is
// read, decrypted with the old key, encrypted with the new and written
// back in userspace, hotzone by hotzone, in cryptsetup's order (docs/reencrypt.md):
// checksums of the hotzone's old ciphertext into the reencrypt keyslot
// area, the header with the hotzone flagged in-reencryption, the hotzone,
// a sync, the header with the hotzone counted as done. Interrupted at any
// write, the device resumes with atrest or `cryptsetup reencrypt
// --resume-only`.
type Reencryptor struct {
	dev        Device
	h          *Header
	st         *ReencryptState
	oldX, newX *xtsAES
	sched      *secret.Key // both ciphers' round keys (locked memory)
	size       uint64      // bytes of data after DataOffset
	sector     uint64
	// Hotzone is the length of one step; DefaultHotzone when 0.
	Hotzone uint64
	// Progress, when set, is called at the start and after every step
	// with the bytes done.
	Progress func(done, total uint64)
	// ReadAhead reads the next hotzone while one is re-encrypted and
	// written (twice the hotzone's memory). Only for an offline run: the
	// data must not change between that read and the hotzone's checksums.
	ReadAhead bool
	ahead     *readAhead
	// Rebind maps old keyslots to new ones: when the re-encryption ends,
	// a token bound to an old keyslot is bound to its new one instead
	// (atrest tokens name exactly one keyslot).
	Rebind map[int]int
	// BeforeHotzone, when set, is called in every step with the header
	// naming the hotzone (in-reencryption), before the hotzone is read and
	// that header written; AfterHotzone once the hotzone is under the new
	// key and the header says so. An online run moves its device-mapper
	// stack there (pkg/volume).
	BeforeHotzone func(hot *Header) error
	AfterHotzone  func() error
}

// ResumeReencrypt prepares to continue the re-encryption h records on dev
// with the old and new volume keys (see OpenReencryptKeys), checking them
// and the reencrypt digest as cryptsetup does. The keys are expanded into
// the ciphers; the caller may wipe them once it returns.
func (h *Header) ResumeReencrypt(dev Device, oldVK, newVK *secret.Key) (*Reencryptor, error) {
	st, err := h.Reencryption()
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("luks2: no reencryption under way")
	}
	if err := h.VerifyReencrypt(st, oldVK, newVK); err != nil {
		return nil, err
	}
	prev, final := h.segmentByFlag(flagBackupPrevious), h.segmentByFlag(flagBackupFinal)
	for _, s := range []*Segment{prev, final} {
		if s.Encryption != Cipher || !s.Dynamic || s.SectorSize != prev.SectorSize {
			return nil, fmt.Errorf("%w: reencryption of %q segments of sector size %d (atrest re-encrypts %s, one sector size, to the device end)", ErrUnsupported, s.Encryption, s.SectorSize, Cipher)
		}
	}
	if uint64(st.BlockSize)%uint64(prev.SectorSize) != 0 {
		return nil, fmt.Errorf("%w: checksum block %d not a multiple of the sector size %d", ErrUnsupported, st.BlockSize, prev.SectorSize)
	}
	devSize, err := dev.Size()
	if err != nil {
		return nil, err
	}
	if uint64(devSize) < st.DataOffset || (uint64(devSize)-st.DataOffset)%uint64(st.BlockSize) != 0 {
		return nil, fmt.Errorf("%w: data area of %d bytes is not a multiple of %d", ErrUnsupported, uint64(devSize)-st.DataOffset, st.BlockSize)
	}
	r := &Reencryptor{dev: dev, h: h, st: st, size: uint64(devSize) - st.DataOffset, sector: uint64(prev.SectorSize)}
	if r.sched, err = secret.New(2 * xtsScheduleSize); err != nil {
		return nil, err
	}
	if r.oldX, err = newXTS(oldVK.Bytes(), r.sched.Bytes()[:xtsScheduleSize]); err != nil {
		r.Close()
		return nil, err
	}
	if r.newX, err = newXTS(newVK.Bytes(), r.sched.Bytes()[xtsScheduleSize:]); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Close wipes the ciphers' round keys; the Reencryptor is unusable after.
func (r *Reencryptor) Close() {
	r.sched.Wipe()
	r.oldX, r.newX = nil, nil
}

// State returns the re-encryption state as of the last header written.
func (r *Reencryptor) State() ReencryptState { return *r.st }

// Size is the number of data bytes to re-encrypt.
func (r *Reencryptor) Size() uint64 { return r.size }

// Run recovers an interrupted hotzone, re-encrypts the rest and ends the
// re-encryption: the old keyslots, the reencrypt keyslot and the old key's
// digest go, their areas are wiped, and the header is an ordinary one with
// the new key. It returns that header.
func (r *Reencryptor) Run(ctx context.Context) (*Header, error) {
	if r.st.Hotzone > 0 {
		if err := r.recover(ctx); err != nil {
			return nil, fmt.Errorf("luks2: reencryption recovery: %w", err)
		}
	}
	step := r.Hotzone
	if step == 0 {
		step = DefaultHotzone
	}
	step = min(step, r.h.Keyslots[r.st.Keyslot].Area.Size/sha256.Size*uint64(r.st.BlockSize))
	step -= step % uint64(r.st.BlockSize)
	if step == 0 {
		return nil, fmt.Errorf("luks2: hotzone smaller than a checksum block")
	}
	if r.Progress != nil {
		r.Progress(r.st.Done, r.size)
	}
	buf := make([]byte, min(step, r.size))
	var next []byte
	if r.ReadAhead && r.size-r.st.Done > step {
		next = make([]byte, len(buf))
	}
	defer func() { _ = r.waitReadAhead() }()
	for !r.st.Finished && r.st.Done < r.size {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(step, r.size-r.st.Done)
		if at := r.st.Done + n; next != nil && at < r.size {
			r.startReadAhead(next[:min(step, r.size-at)], r.st.DataOffset+at)
		}
		if err := r.step(ctx, buf[:n]); err != nil {
			return nil, err
		}
		if r.Progress != nil {
			r.Progress(r.st.Done, r.size)
		}
		if next != nil {
			buf, next = next, buf
		}
	}
	return r.finish(ctx)
}

// step re-encrypts the hotzone at Done of len(buf) bytes.
func (r *Reencryptor) step(ctx context.Context, buf []byte) error {
	off := r.st.DataOffset + r.st.Done
	hot := r.update()
	r.setSegments(hot.next, r.st.Done, uint64(len(buf)))
	if r.BeforeHotzone != nil {
		if err := r.BeforeHotzone(hot.next); err != nil {
			return err
		}
	}
	// Read after BeforeHotzone: online, the hotzone is held from there on
	// (and ReadAhead, which reads before that, is off).
	sums, err := r.readHotzone(buf, off)
	if err != nil {
		return err
	}
	hot.pending[r.st.Keyslot] = sums
	if err := r.commit(ctx, hot); err != nil {
		return err
	}
	r.recrypt(buf, r.st.Done)
	defer clear(buf)
	if _, err := r.dev.WriteAt(buf, int64(off)); err != nil {
		return fmt.Errorf("luks2: write hotzone at %d: %w", off, err)
	}
	if err := r.dev.Sync(); err != nil {
		return fmt.Errorf("luks2: sync: %w", err)
	}
	if err := r.done(ctx, r.st.Done+uint64(len(buf))); err != nil {
		return err
	}
	if r.AfterHotzone != nil {
		return r.AfterHotzone()
	}
	return nil
}

// recover completes the hotzone a run was writing when it stopped, as
// cryptsetup's checksum recovery: a block whose hash is the stored hash of
// its old ciphertext is still old and is re-encrypted; any other block was
// written already.
func (r *Reencryptor) recover(ctx context.Context) error {
	n, off := r.st.Hotzone, r.st.DataOffset+r.st.Done
	blk := uint64(r.st.BlockSize)
	if n%blk != 0 || n/blk*sha256.Size > r.h.Keyslots[r.st.Keyslot].Area.Size {
		return fmt.Errorf("%w: hotzone of %d bytes does not fit the checksum area", ErrUnsupported, n)
	}
	sums := make([]byte, n/blk*sha256.Size)
	if _, err := r.dev.ReadAt(sums, int64(r.h.Keyslots[r.st.Keyslot].Area.Offset)); err != nil {
		return err
	}
	buf := make([]byte, n)
	if _, err := r.dev.ReadAt(buf, int64(off)); err != nil {
		return err
	}
	defer clear(buf)
	for b := uint64(0); b < n; b += blk {
		s := sha256.Sum256(buf[b : b+blk])
		if bytes.Equal(s[:], sums[b/blk*sha256.Size:][:sha256.Size]) {
			r.recrypt(buf[b:b+blk], r.st.Done+b)
			if _, err := r.dev.WriteAt(buf[b:b+blk], int64(off+b)); err != nil {
				return err
			}
		}
	}
	if err := r.dev.Sync(); err != nil {
		return err
	}
	return r.done(ctx, r.st.Done+n)
}

// done records that the data up to done is under the new key: the next
// clean state, or the end of the re-encryption.
func (r *Reencryptor) done(ctx context.Context, done uint64) error {
	if done >= r.size {
		r.st.Done, r.st.Hotzone, r.st.Finished = r.size, 0, true
		return nil
	}
	u := r.update()
	r.setSegments(u.next, done, 0)
	return r.commit(ctx, u)
}

// update starts an Update of a header under reencryption (Begin refuses
// headers with requirements).
func (r *Reencryptor) update() *Update { return reencUpdate(r.h) }

func (r *Reencryptor) commit(ctx context.Context, u *Update) error {
	h, err := u.Commit(ctx, r.dev)
	if err != nil {
		return err
	}
	st, err := h.Reencryption()
	if err != nil {
		return err
	}
	r.h, r.st = h, st
	return nil
}

// setSegments lays out the segments as cryptsetup's forward reencryption
// does: with hot 0, the clean state after done bytes (new [0, done), old
// [done, end)); otherwise the hotzone [done, done+hot) flagged
// in-reencryption between them. Backup segments follow; each crypt
// segment is bound to the digest of its key, the hotzone to both.
func (r *Reencryptor) setSegments(h *Header, done, hot uint64) {
	st := r.st
	prev, final := h.segmentByFlag(flagBackupPrevious), h.segmentByFlag(flagBackupFinal)
	oldD, newD := h.Digests[st.OldDigest], h.Digests[st.NewDigest]
	oldD.Segments, newD.Segments = []int{}, []int{}
	segs := map[int]*Segment{}
	add := func(from *Segment, off, size uint64, flags ...string) *Segment {
		s := cloneSegment(from, len(segs), flags...)
		s.Offset, s.IVTweak = st.DataOffset+off, off/512
		s.Size, s.Dynamic = size, size == 0
		segs[s.ID] = s
		return s
	}
	if done > 0 {
		s := add(final, 0, done)
		newD.Segments = append(newD.Segments, s.ID)
	}
	if hot > 0 {
		s := add(final, done, hot, flagInReencryption)
		newD.Segments = append(newD.Segments, s.ID)
		oldD.Segments = append(oldD.Segments, s.ID)
	}
	if done+hot < r.size {
		s := add(prev, done+hot, 0)
		oldD.Segments = append(oldD.Segments, s.ID)
	}
	p, f := *prev, *final
	p.ID, f.ID = len(segs), len(segs)+1
	segs[p.ID], segs[f.ID] = &p, &f
	oldD.Segments = append(oldD.Segments, p.ID)
	newD.Segments = append(newD.Segments, f.ID)
	h.Segments = segs
}

// finish writes the ordinary header with the new key only; the old key's
// keyslots and the reencrypt keyslot are wiped once it is on the device.
// Tokens follow Rebind; a token left bound to no keyslot is removed.
func (r *Reencryptor) finish(ctx context.Context) (*Header, error) {
	u := r.update()
	next, st := u.next, r.st
	rd := next.reencryptDigest(st)
	for _, t := range next.Tokens {
		for i, ks := range t.Keyslots {
			if to, ok := r.Rebind[ks]; ok && next.Keyslots[to] != nil && slices.Contains(next.Digests[st.NewDigest].Keyslots, to) {
				t.Keyslots[i] = to
			}
		}
		var uniq []int
		for _, ks := range t.Keyslots {
			if !slices.Contains(uniq, ks) {
				uniq = append(uniq, ks)
			}
		}
		t.Keyslots = uniq
	}
	bound := map[int]bool{}
	for id, t := range next.Tokens {
		bound[id] = len(t.Keyslots) > 0
	}
	for _, id := range next.KeyslotIDs() {
		if id == st.Keyslot || slices.Contains(next.Digests[st.OldDigest].Keyslots, id) {
			if err := u.KillKeyslot(id); err != nil {
				return nil, err
			}
		}
	}
	// A token that was bound only to removed keyslots opens nothing.
	for id, t := range next.Tokens {
		if bound[id] && len(t.Keyslots) == 0 {
			delete(next.Tokens, id)
		}
	}
	final := next.segmentByFlag(flagBackupFinal)
	seg := cloneSegment(final, 0)
	seg.Offset, seg.IVTweak, seg.Size, seg.Dynamic = st.DataOffset, 0, 0, true
	next.Segments = map[int]*Segment{0: seg}
	delete(next.Digests, st.OldDigest)
	if rd != nil {
		delete(next.Digests, rd.ID)
	}
	next.Digests[st.NewDigest].Segments = []int{0}
	next.Config.Requirements = slices.DeleteFunc(next.Config.Requirements, isOnlineReencrypt)
	h, err := u.Commit(ctx, r.dev)
	if err != nil {
		return nil, err
	}
	r.h = h
	return h, nil
}
