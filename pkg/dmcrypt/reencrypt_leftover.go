package dmcrypt

import (
	"errors"
	"fmt"

	devmapper "github.com/anatol/devmapper.go"
	"golang.org/x/sys/unix"
)

// Leftover is what an earlier online run, killed, left of its stack.
type Leftover struct {
	// Suspended: the hotzone device holds I/O for the hotzone
	// [HotStart, HotStart+HotSectors) (sectors within the data area).
	Suspended            bool
	HotStart, HotSectors uint64
	// Failed: the hotzone device is an error target (a step failed while
	// it held the hotzone's I/O; see FailHotzone).
	Failed bool
	// Flags are the dm-crypt options of the overlay's crypt targets.
	Flags Flag
}

// FindLeftover reports the stack a killed run left (nil when there is no
// overlay device): whether the hotzone device is suspended, and which
// part of the data area the overlay maps through it.
func (s *Stack) FindLeftover() (*Leftover, error) {
	if _, err := devmapper.InfoByName(s.OverlayName()); err != nil {
		if errors.Is(err, unix.ENXIO) {
			return nil, nil
		}
		return nil, dmError("query", s.OverlayName(), err)
	}
	lo := &Leftover{}
	st, err := Inspect(s.HotzoneName())
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if st == nil {
		return lo, nil
	}
	lo.Suspended = st.Suspended
	err = readTable(s.HotzoneName(), func(t target, _ []byte) error {
		lo.Failed = lo.Failed || t.kind == "error"
		return nil
	})
	if err != nil {
		return nil, err
	}
	hz := fmt.Sprintf("%d:%d", st.Major, st.Minor)
	err = readTable(s.OverlayName(), func(t target, params []byte) error {
		if t.kind != "crypt" {
			return nil
		}
		tab, err := parseCrypt(params)
		if err != nil {
			return fmt.Errorf("dmcrypt: table of %s: %w", s.OverlayName(), err)
		}
		lo.Flags = tab.Flags
		if tab.Device == hz {
			lo.HotStart, lo.HotSectors = t.start, t.length
		}
		return nil
	})
	return lo, err
}

// ResumeKilledOverlay resumes an overlay a run killed inside Refresh left
// suspended: it holds the file system's I/O (a suspend of the device above
// it would wait for that I/O for ever). Killed before the hotzone device
// was suspended (hotzoneHeld false), the overlay's new table, which would
// send the next hotzone's writes through a device not holding them, is
// dropped and the overlay resumes with its live table, the layout before
// that hotzone (no write of it happened); killed after, its new table is
// the one Refresh was about to resume, and resuming it finishes Refresh.
// Only for a stack no run is using: the caller holds the re-encryption
// lock (a live run's Refresh suspends the overlay too; FindLeftover, a
// query, never changes anything).
func (s *Stack) ResumeKilledOverlay(hotzoneHeld bool) error {
	ov, err := Inspect(s.OverlayName())
	if err != nil || !ov.Suspended {
		return err
	}
	if !hotzoneHeld {
		if err := clearInactive(s.OverlayName()); err != nil {
			return err
		}
	}
	return resume(s.OverlayName(), 0)
}

// RemoveLeftover removes the helper devices; nothing may be stacked on
// them any more.
func (s *Stack) RemoveLeftover() error {
	var errs []error
	for _, n := range []string{s.OverlayName(), s.HotzoneName()} {
		if err := devmapper.Remove(n); err != nil && !errors.Is(err, unix.ENXIO) {
			errs = append(errs, dmError("remove", n, err))
		}
	}
	return errors.Join(errs...)
}
