package luks2

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/atrest/atrest/pkg/secret"
)

// ShiftEncryptor runs an encryption in place a header records, offline,
// in cryptsetup's order: the header naming the hotzone (flagged
// in-reencryption), the hotzone read from its plaintext source and
// written encrypted shift bytes further along, a sync, the header with
// the hotzone counted as done. Interrupted at any write, it resumes with
// atrest or `cryptsetup reencrypt --resume-only`.
type ShiftEncryptor struct {
	dev    Device
	h      *Header
	st     *ShiftState
	x      *xtsAES
	sched  *secret.Key
	sector uint64
	// Progress, when set, is called at the start and after every step
	// with the plaintext bytes encrypted.
	Progress func(done, total uint64)
}

// ResumeEncrypt prepares to continue the encryption in place h records on
// dev with the volume key vk (see OpenEncryptKey), checked against its
// digest and the reencrypt digest. The caller may wipe vk once it returns.
func (h *Header) ResumeEncrypt(dev Device, vk *secret.Key) (*ShiftEncryptor, error) {
	st, err := h.EncryptionInPlace()
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("luks2: no encryption in place under way")
	}
	if err := h.Digests[st.Digest].verify(vk); err != nil {
		return nil, fmt.Errorf("volume key: %w", err)
	}
	if err := h.verifyShift(st, vk); err != nil {
		return nil, err
	}
	final := h.segmentByFlag(flagBackupFinal)
	sector := uint64(final.SectorSize)
	if sector == 0 || st.Shift%sector != 0 || st.Size%sector != 0 || st.MovedSize%sector != 0 {
		return nil, fmt.Errorf("%w: sizes not in whole %d-byte sectors", ErrUnsupported, sector)
	}
	devSize, err := dev.Size()
	if err != nil {
		return nil, err
	}
	if uint64(devSize) < st.DataOffset+st.Size || uint64(devSize) < st.MovedOffset+st.MovedSize {
		return nil, fmt.Errorf("%w: the device (%d bytes) ends inside the data", ErrDeviceTooSmall, devSize)
	}
	r := &ShiftEncryptor{dev: dev, h: h, st: st, sector: sector}
	if r.sched, err = secret.New(xtsScheduleSize); err != nil {
		return nil, err
	}
	if r.x, err = newXTS(vk.Bytes(), r.sched.Bytes()); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Close wipes the cipher's round keys.
func (r *ShiftEncryptor) Close() {
	r.sched.Wipe()
	r.x = nil
}

// State returns the state as of the last header written.
func (r *ShiftEncryptor) State() ShiftState { return *r.st }

// Run does an interrupted hotzone again, encrypts the rest, and ends the
// encryption in place: the reencrypt keyslot and its digest go and the
// header is an ordinary one with one crypt segment. It returns that header.
//
// One header commit per hotzone: the header naming hotzone k+1 (flagged
// in-reencryption) also counts hotzone k as done, so cryptsetup's
// separate "done" commit in between (two more syncs) is not written. What
// crash safety needs is kept: hotzone k's data is synced before any header
// counts it as done, and that header is on the device before hotzone
// k+1's write overwrites k's source (its destination is k's plaintext,
// shift bytes further along). The state between is the one cryptsetup
// writes as its own flagged state, so either tool resumes it (cryptsetup
// after `cryptsetup repair`, as after any cut-short hotzone); a run
// cancelled between hotzones writes the "done" header before it returns,
// so that state needs no repair. The next
// hotzone's plaintext is read while the current one is written and
// synced (it lies below everything a write touches until its own turn).
func (r *ShiftEncryptor) Run(ctx context.Context) (*Header, error) {
	r.progress()
	// done: the plaintext from done on is encrypted at its place.
	done := r.st.Start
	if n := r.st.Hotzone; n > 0 {
		buf := make([]byte, n)
		defer clear(buf)
		if err := r.read(buf, r.st.Start); err != nil {
			return nil, fmt.Errorf("luks2: encryption in place, hotzone again: %w", err)
		}
		if err := r.write(buf, r.st.Start); err != nil {
			return nil, fmt.Errorf("luks2: encryption in place, hotzone again: %w", err)
		}
	}
	var buf, next []byte
	var ahead chan error
	defer func() {
		if ahead != nil {
			<-ahead
		}
		clear(buf)
		clear(next)
	}()
	for done > 0 {
		if err := ctx.Err(); err != nil {
			// Stopped between hotzones: the header counts the last one
			// as done, a clean state both tools resume without repair.
			if r.st.Hotzone > 0 {
				err = errors.Join(err, r.commit(context.WithoutCancel(ctx), done, 0))
			}
			return nil, err
		}
		start, n := r.hotzoneBelow(done)
		if buf == nil {
			buf, next = make([]byte, min(r.st.Shift, done)), make([]byte, min(r.st.Shift, done))
		}
		b := buf[:n]
		if ahead != nil {
			err := <-ahead
			ahead = nil
			if err != nil {
				return nil, err
			}
		} else if err := r.read(b, start); err != nil {
			return nil, err
		}
		if start > 0 {
			// The source is found here: commit replaces r.st meanwhile.
			ns, nn := r.hotzoneBelow(start)
			src, ch := r.source(ns), make(chan error, 1)
			go func(p []byte) {
				_, err := r.dev.ReadAt(p, int64(src))
				if err != nil {
					err = fmt.Errorf("read plaintext at %d: %w", src, err)
				}
				ch <- err
			}(next[:nn])
			ahead = ch
		}
		if err := r.commit(ctx, start, n); err != nil {
			return nil, err
		}
		if err := r.write(b, start); err != nil {
			return nil, err
		}
		done = start
		if done > 0 {
			r.progressAt(done)
		}
		buf, next = next, buf
	}
	// The last hotzone is followed directly by the final header, as
	// cryptsetup writes it (a state with everything encrypted and the
	// metadata still there it does not resume).
	h, err := r.finish(ctx)
	if err == nil && r.Progress != nil {
		r.Progress(r.st.Size, r.st.Size)
	}
	return h, err
}

// hotzoneBelow is the hotzone encrypted next when the plaintext from done
// on is encrypted: the end of the last plaintext segment, at most the
// shift (so it never overwrites its own source), the moved part [0,
// MovedSize) or the part in place.
func (r *ShiftEncryptor) hotzoneBelow(done uint64) (start, n uint64) {
	floor := uint64(0)
	if done > r.st.MovedSize {
		floor = r.st.MovedSize
	}
	n = min(r.st.Shift, done, done-floor)
	return done - n, n
}

// progressAt reports the plaintext from done on as encrypted.
func (r *ShiftEncryptor) progressAt(done uint64) {
	if r.Progress != nil {
		r.Progress(r.st.Size-done, r.st.Size)
	}
}

func (r *ShiftEncryptor) progress() {
	if r.Progress != nil {
		r.Progress(r.st.Done(), r.st.Size)
	}
}

// read reads the plaintext [start, start+len(buf)) from its source: the
// moved segment or in place.
func (r *ShiftEncryptor) read(buf []byte, start uint64) error {
	src := r.source(start)
	if _, err := r.dev.ReadAt(buf, int64(src)); err != nil {
		return fmt.Errorf("read plaintext at %d: %w", src, err)
	}
	return nil
}

// source is where the plaintext at start lies: in the moved segment or
// in place.
func (r *ShiftEncryptor) source(start uint64) uint64 {
	if start < r.st.MovedSize {
		return r.st.MovedOffset + start
	}
	return start
}

// write encrypts buf, the plaintext at start, in place, writes it to its
// place in the data area and syncs.
func (r *ShiftEncryptor) write(buf []byte, start uint64) error {
	sec := int(r.sector)
	spread(len(buf), sec, func(lo, hi int) {
		for s := lo; s < hi; s += sec {
			r.x.cryptSectors(buf[s:s+sec], sec, (start+uint64(s))/512, true)
		}
	})
	if _, err := r.dev.WriteAt(buf, int64(r.st.DataOffset+start)); err != nil {
		return fmt.Errorf("write hotzone at %d: %w", r.st.DataOffset+start, err)
	}
	return r.dev.Sync()
}

// commit writes the header with plaintext [0, start) linear, then with
// hot > 0 the hotzone [start, start+hot) flagged in-reencryption, then the
// part encrypted; with hot 0 the part from start on is done.
func (r *ShiftEncryptor) commit(ctx context.Context, start, hot uint64) error {
	u := reencUpdate(r.h)
	h, st := u.next, r.st
	prev, final, moved := h.segmentByFlag(flagBackupPrevious), h.segmentByFlag(flagBackupFinal), h.segmentByFlag(flagBackupMovedSeg)
	d := h.Digests[st.Digest]
	d.Segments = []int{}
	segs := map[int]*Segment{}
	add := func(s *Segment) { s.ID = len(segs); segs[s.ID] = s }
	linear := func(off, size uint64) {
		add(&Segment{Type: "linear", Offset: off, Size: size})
	}
	crypt := func(pos, size uint64, flags ...string) {
		s := cloneSegment(final, 0, flags...)
		s.Offset, s.IVTweak, s.Size, s.Dynamic = st.DataOffset+pos, pos/512, size, false
		if pos+size == st.Size && pos == 0 && hot == 0 {
			s.Size, s.Dynamic = 0, true
		}
		add(s)
		d.Segments = append(d.Segments, s.ID)
	}
	if m := min(start, st.MovedSize); m > 0 {
		linear(st.MovedOffset, m)
	}
	if start > st.MovedSize {
		linear(st.MovedSize, start-st.MovedSize)
	}
	if hot > 0 {
		crypt(start, hot, flagInReencryption)
	}
	if done := start + hot; done < st.Size {
		crypt(done, st.Size-done)
	}
	for _, b := range []*Segment{prev, final, moved} {
		if b != nil {
			c := *b
			add(&c)
			if b == final {
				d.Segments = append(d.Segments, c.ID)
			}
		}
	}
	h.Segments = segs
	next, err := u.Commit(ctx, r.dev)
	if err != nil {
		return err
	}
	nst, err := next.EncryptionInPlace()
	if err != nil {
		return err
	}
	r.h, r.st = next, nst
	return nil
}

// finish writes the ordinary header: one crypt segment from the data
// offset to the device's end, the reencrypt keyslot (its area wiped once
// the header is on the device), its digest and the requirement gone.
func (r *ShiftEncryptor) finish(ctx context.Context) (*Header, error) {
	u := reencUpdate(r.h)
	next, st := u.next, r.st
	rd := next.DigestForKeyslot(st.Keyslot)
	if err := u.KillKeyslot(st.Keyslot); err != nil {
		return nil, err
	}
	if rd != nil && rd.ID != st.Digest {
		delete(next.Digests, rd.ID)
	}
	seg := cloneSegment(next.segmentByFlag(flagBackupFinal), 0)
	seg.Offset, seg.IVTweak, seg.Size, seg.Dynamic = st.DataOffset, 0, 0, true
	next.Segments = map[int]*Segment{0: seg}
	next.Digests[st.Digest].Segments = []int{0}
	next.Config.Requirements = slices.DeleteFunc(next.Config.Requirements, isOnlineReencrypt)
	h, err := u.Commit(ctx, r.dev)
	if err != nil {
		return nil, err
	}
	r.h = h
	return h, nil
}
