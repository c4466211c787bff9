package volume

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
)

// An online re-encryption (docs/reencrypt.md) runs the same steps and
// writes the same headers as the offline one (pkg/luks2's Reencryptor);
// around each hotzone it moves the device-mapper stack cryptsetup 2.6
// builds (pkg/dmcrypt.Stack), so the mounted file system's I/O goes on:
// before a hotzone is read the overlay maps it through the suspended
// hotzone device (its I/O waits, encrypted with the new key), after the
// header counts it as done the hotzone device is resumed.

// ErrOnlineState: an open volume whose state an online run cannot take
// over safely (a hotzone cut short with no stack of a killed run under
// the mapping, a mapping that is not this volume's).
var ErrOnlineState = fmt.Errorf("%w: cannot re-encrypt this open volume online", blockdev.ErrInUse)

// onlineRun is one online re-encryption's stack and keys.
type onlineRun struct {
	stack    *dmcrypt.Stack
	file     *os.File // the device, for the tables' major:minor and fadvise
	dev      *uncachedDevice
	keys     map[int]*secret.Key // by digest id
	st       luks2.ReencryptState
	size     uint64 // data bytes
	sector   uint32
	leftover *dmcrypt.Leftover // a killed run's suspended hotzone, until taken over
	hotzone  uint64
	// cur is the hotzone the stack maps through the hotzone device: its
	// start and length in the data area.
	cur struct{ start, n uint64 }
}

// uncachedDevice reads and syncs the device around the page cache: the
// file system writes through device-mapper, under the block device's
// page cache, so a page cached by an earlier read of the device may be
// stale. Clean pages are dropped before each read and after each sync.
type uncachedDevice struct {
	*luks2.File
	fd int
}

func (u *uncachedDevice) ReadAt(p []byte, off int64) (int, error) {
	_ = unix.Fadvise(u.fd, off, int64(len(p)), unix.FADV_DONTNEED)
	return u.File.ReadAt(p, off)
}

func (u *uncachedDevice) Sync() error {
	err := u.File.Sync()
	_ = unix.Fadvise(u.fd, 0, 0, unix.FADV_DONTNEED)
	return err
}

// checkOnline refuses, before anything is written, an open volume whose
// mapping is not this volume's, is read-only, or is neither crypt
// targets over the data area nor a killed online run's stack.
func (c *change) checkOnline() error {
	if uuid := c.m.MappingUUID(c.v.Name); uuid != c.v.UUID() && uuid != "" {
		return fmt.Errorf("%w: /dev/mapper/%s maps another LUKS2 volume (%s)", ErrOnlineState, c.v.Name, uuid)
	}
	st, err := dmcrypt.Inspect(c.v.Name)
	if err != nil {
		return err
	}
	if st.ReadOnly {
		return fmt.Errorf("%w: /dev/mapper/%s is read-only", ErrOnlineState, c.v.Name)
	}
	if lo, err := (&dmcrypt.Stack{Name: c.v.Name}).FindLeftover(); err != nil || lo != nil {
		return err
	}
	ms, err := dmcrypt.InspectCrypt(c.v.Name)
	if err != nil {
		return err
	}
	seg := c.v.Header.Segments[0]
	size, err := c.dev.Size()
	if err != nil {
		return err
	}
	if ms == nil || seg == nil || uint64(size) < seg.Offset || ms.Sectors != (uint64(size)-seg.Offset)/512 {
		return fmt.Errorf("%w: /dev/mapper/%s is not a crypt mapping of the whole data area", ErrOnlineState, c.v.Name)
	}
	return nil
}

// newOnlineRun prepares the stack for the re-encryption st of the open
// volume; keys are copied (the caller wipes its own).
func (c *change) newOnlineRun(keys *luks2.ReencryptKeys, st *luks2.ReencryptState) (o *onlineRun, err error) {
	seg := c.v.Header.Segments[0]
	if seg == nil {
		return nil, fmt.Errorf("%w: no segment 0", ErrOnlineState)
	}
	f, err := os.Open(c.v.Device)
	if err != nil {
		return nil, err
	}
	o = &onlineRun{file: f, keys: map[int]*secret.Key{}, st: *st, sector: seg.SectorSize}
	defer func() {
		if err != nil {
			o.close()
		}
	}()
	for id, k := range map[int]*secret.Key{st.OldDigest: keys.Old, st.NewDigest: keys.New} {
		if o.keys[id], err = k.Clone(); err != nil {
			return nil, err
		}
	}
	_, devBytes, err := dmcrypt.BackingDevice(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.v.Device, err)
	}
	o.size = devBytes - st.DataOffset
	o.dev = &uncachedDevice{File: c.dev, fd: int(f.Fd())}
	o.stack = &dmcrypt.Stack{Name: c.v.Name, UUID: c.v.UUID(), Backing: f,
		DataOffsetSectors: st.DataOffset / 512, SizeSectors: o.size / 512}
	if o.leftover, err = o.stack.FindLeftover(); err != nil {
		return nil, err
	}
	if o.leftover != nil {
		// Under the re-encryption lock: no run uses the stack.
		if err := o.stack.ResumeKilledOverlay(o.leftover.Suspended); err != nil {
			return nil, fmt.Errorf("online re-encryption device stack: %w", err)
		}
		o.stack.Flags = o.leftover.Flags
		if o.leftover.Failed {
			// A run whose step failed: its hotzone's I/O fails; hold it
			// again (it waits, as after a kill) while the hotzone is done.
			if err := o.stack.HoldHotzone(); err != nil {
				return nil, fmt.Errorf("online re-encryption device stack: %w", err)
			}
			o.leftover.Suspended = true
		}
		if o.leftover.Suspended {
			o.cur.start, o.cur.n = o.leftover.HotStart*512, o.leftover.HotSectors*512
			o.hotzone = o.leftover.HotSectors * 512
		}
		return o, nil
	}
	// A hotzone cut short is recovered by writing the device directly:
	// only safe while I/O to it is held, by a killed run's stack.
	if st.Hotzone > 0 {
		return nil, fmt.Errorf("%w: a hotzone was cut short and no online run's devices hold its I/O; close the volume and run atrest reencrypt %s to finish offline", ErrOnlineState, c.v.Name)
	}
	// The mapping has the header's segments: one crypt target at the
	// start, done and rest when a run (atrest's or cryptsetup's) stopped
	// between hotzones.
	segs, err := o.layout(st.Done, 0)
	if err != nil {
		return nil, err
	}
	ms, err := dmcrypt.InspectCrypt(c.v.Name)
	if err != nil {
		return nil, err
	}
	if ms == nil || ms.Targets != len(segs) || ms.Sectors != o.size/512 {
		return nil, fmt.Errorf("%w: /dev/mapper/%s does not map the header's %d segments over the %d-sector data area", ErrOnlineState, c.v.Name, len(segs), o.size/512)
	}
	o.stack.Flags = ms.Flags
	if err := o.stack.Build(segs); err != nil {
		return nil, fmt.Errorf("online re-encryption device stack: %w", err)
	}
	return o, nil
}

// attach hooks the stack into r's steps. A cancelled ctx stops the run
// before the next hotzone is touched: the step returns ctx's error before
// its overlay refresh and its first write, so the stack comes down to the
// clean state (stopped).
func (o *onlineRun) attach(ctx context.Context, r *luks2.Reencryptor) {
	if o.hotzone > 0 {
		r.Hotzone = o.hotzone
	}
	r.BeforeHotzone = func(hot *luks2.Header) error {
		if err := ctx.Err(); err != nil {
			if o.leftover == nil {
				return err
			}
			// Taking a killed run over, then stopping: a held hotzone
			// the header counts as done already is let through first.
			if done, derr := o.leftoverDone(hot); derr != nil || done {
				return errors.Join(err, derr)
			}
		}
		return o.beforeHotzone(hot)
	}
	r.AfterHotzone = o.stack.ResumeHotzone
}

// beforeHotzone maps the hotzone the header hot names through the
// suspended hotzone device. A killed run's suspended hotzone is taken
// over: when it is the same hotzone nothing moves; when the header counts
// it as done already (recovered, or killed after the header write), its
// I/O is let through first.
func (o *onlineRun) beforeHotzone(hot *luks2.Header) error {
	hs, err := hot.Reencryption()
	if err != nil {
		return err
	}
	if lo := o.leftover; lo != nil && lo.Suspended {
		start, n := hs.Done/512, hs.Hotzone/512
		switch {
		case start == lo.HotStart && n == lo.HotSectors:
			o.leftover = nil
			o.cur.start, o.cur.n = hs.Done, hs.Hotzone
			return nil
		case start >= lo.HotStart+lo.HotSectors:
			if err := o.stack.ResumeHotzone(); err != nil {
				return err
			}
			o.leftover = nil
		default:
			return fmt.Errorf("%w: the suspended hotzone (sectors %d+%d) is not where the header's re-encryption stands (%d)", ErrOnlineState, lo.HotStart, lo.HotSectors, start)
		}
	}
	segs, err := o.layout(hs.Done, hs.Hotzone)
	if err != nil {
		return err
	}
	if err := o.stack.Refresh(segs); err != nil {
		return err
	}
	o.cur.start, o.cur.n = hs.Done, hs.Hotzone
	return nil
}

// leftoverDone lets a killed run's held hotzone through when the header
// hot (naming the next hotzone) counts it as done, and reports whether it
// did.
func (o *onlineRun) leftoverDone(hot *luks2.Header) (bool, error) {
	lo := o.leftover
	if lo == nil || !lo.Suspended {
		return lo != nil, nil
	}
	hs, err := hot.Reencryption()
	if err != nil {
		return false, err
	}
	if hs.Done/512 < lo.HotStart+lo.HotSectors {
		return false, nil
	}
	if err := o.stack.ResumeHotzone(); err != nil {
		return false, err
	}
	o.leftover = nil
	return true, nil
}

// layout is the segments after done bytes with a hotzone of hot bytes,
// as pkg/luks2 writes them: new key [0, done), the hotzone (new key,
// through the hotzone device), old key to the end.
func (o *onlineRun) layout(done, hot uint64) ([]dmcrypt.ReencryptSegment, error) {
	var segs []dmcrypt.ReencryptSegment
	add := func(off, n uint64, digest int, hz bool) error {
		k := o.keys[digest]
		if k == nil {
			return fmt.Errorf("%w: no key for digest %d", ErrOnlineState, digest)
		}
		segs = append(segs, dmcrypt.ReencryptSegment{
			OffsetSectors: (o.st.DataOffset + off) / 512, Sectors: n / 512, IVOffset: off / 512,
			SectorSize: o.sector, Key: k, KeyID: digest, Hotzone: hz,
		})
		return nil
	}
	if done > 0 {
		if err := add(0, done, o.st.NewDigest, false); err != nil {
			return nil, err
		}
	}
	if hot > 0 {
		if err := add(done, hot, o.st.NewDigest, true); err != nil {
			return nil, err
		}
	}
	if done+hot < o.size {
		if err := add(done+hot, 0, o.st.OldDigest, false); err != nil {
			return nil, err
		}
	}
	return segs, nil
}

// teardown gives the mapping the table of the state done (all of it at
// the end, done and rest when a run stops between hotzones) and removes
// the helpers.
func (o *onlineRun) teardown(done uint64) error {
	segs, err := o.layout(done, 0)
	if err != nil {
		return err
	}
	if err := o.stack.Teardown(segs); err != nil {
		return fmt.Errorf("online re-encryption device stack: %w", err)
	}
	return nil
}

// ErrHotzoneFailed: a step of an online run failed (an I/O error of the
// device, most likely) while the hotzone device held the file system's
// I/O to the hotzone; that I/O, and all I/O to the hotzone until the next
// run, fails with EIO.
var ErrHotzoneFailed = errors.New("the online re-encryption failed in the middle of a hotzone")

// stopped tears the stack down after Run returned with the state st:
// between hotzones (cancelled) the mapping gets the done+rest table, as
// cryptsetup leaves it, so either tool resumes. A step that failed while
// the hotzone device held the hotzone's I/O (encrypted with the new key
// for data the header does not count as re-encrypted) ends as cryptsetup
// ends it: the hotzone device becomes an error target, so that I/O fails
// instead of waiting for ever or landing out of order; the stack stays
// for the next run. A hotzone the header counts as done already is let
// through instead.
func (o *onlineRun) stopped(st luks2.ReencryptState) error {
	if hz, err := dmcrypt.Inspect(o.stack.HotzoneName()); err == nil && hz.Suspended {
		if o.cur.n == 0 || st.Done < o.cur.start+o.cur.n {
			if err := o.stack.FailHotzone(); err != nil {
				return fmt.Errorf("%w; replacing its device %s with an error target failed too (%w): its I/O waits; do not resume that device", ErrHotzoneFailed, o.stack.HotzoneName(), err)
			}
			return fmt.Errorf("%w: I/O to bytes %d-%d of /dev/mapper/%s fails (its device %s is an error target, as cryptsetup leaves it); once the fault is fixed `atrest reencrypt %s` continues online, or unmount, `atrest close %s` and re-encrypt offline",
				ErrHotzoneFailed, o.cur.start, o.cur.start+o.cur.n, o.stack.Name, o.stack.HotzoneName(), o.stack.Name, o.stack.Name)
		}
		if err := o.stack.ResumeHotzone(); err != nil {
			return err
		}
	}
	if st.Hotzone > 0 {
		return nil
	}
	return o.teardown(st.Done)
}

func (o *onlineRun) close() {
	for _, k := range o.keys {
		k.Wipe()
	}
	_ = o.file.Close()
}

// finishLeftover completes what a run killed after its last header write
// left: the header has no re-encryption any more, the data is all under
// the key of segment 0, and the mapping still goes through the stack. It
// reports whether there was such a stack. ps opens the platform keyslot
// slot (a policy volume's: the branch that answered).
func (c *change) finishLeftover(slot int, ps *secret.Key) (bool, error) {
	stack := &dmcrypt.Stack{Name: c.v.Name, UUID: c.v.UUID()}
	lo, err := stack.FindLeftover()
	if err != nil || lo == nil {
		return false, err
	}
	h := c.v.Header
	seg := h.Segments[0]
	d := h.DigestForSegment(0)
	if seg == nil || d == nil || c.v.Platform == nil {
		return false, fmt.Errorf("%w: an online re-encryption's devices are left under /dev/mapper/%s, and the header has no data segment", ErrOnlineState, c.v.Name)
	}
	vk, err := h.OpenKeyslot(c.dev, slot, ps)
	if err != nil {
		return false, err
	}
	defer vk.Wipe()
	f, err := os.Open(c.v.Device)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, devBytes, err := dmcrypt.BackingDevice(f)
	if err != nil {
		return false, err
	}
	stack.Backing, stack.Flags = f, lo.Flags
	stack.DataOffsetSectors, stack.SizeSectors = seg.Offset/512, (devBytes-seg.Offset)/512
	err = stack.Teardown([]dmcrypt.ReencryptSegment{{
		OffsetSectors: seg.Offset / 512, IVOffset: seg.IVTweak, SectorSize: seg.SectorSize, Key: vk, KeyID: d.ID,
	}})
	if err != nil {
		return false, fmt.Errorf("online re-encryption device stack: %w", err)
	}
	return true, nil
}
