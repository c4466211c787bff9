package dmcrypt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	devmapper "github.com/anatol/devmapper.go"
	"golang.org/x/sys/unix"
)

// closeAttempts bounds Close's retries on EBUSY: udev's probes and blkid
// hold a fresh mapping open for moments, so a few short retries ride them
// out, while a mounted mapping stays busy and fails after about a second.
const closeAttempts = 5

// closeBackoff is the pause after the n-th busy attempt.
func closeBackoff(n int) time.Duration { return time.Duration(n+1) * 100 * time.Millisecond }

// BusyError reports a mapping Close could not remove because it is in use.
// It matches ErrBusy under errors.Is.
type BusyError struct {
	// Name is the mapping.
	Name string
	// OpenCount is the number of openers when Close gave up.
	OpenCount int
	// Mounts are the mount points of the mapping (from /proc/self/mountinfo).
	Mounts []string
	// Holders are devices stacked on the mapping.
	Holders []string
}

func (e *BusyError) Error() string {
	var why []string
	if len(e.Mounts) > 0 {
		why = append(why, "mounted on "+strings.Join(e.Mounts, ", "))
	}
	if len(e.Holders) > 0 {
		why = append(why, "held by "+strings.Join(e.Holders, ", "))
	}
	if len(why) == 0 {
		why = append(why, fmt.Sprintf("open %d times", e.OpenCount))
	}
	return fmt.Sprintf("dmcrypt: cannot close %s: it is in use (%s); unmount or release it first", e.Name, strings.Join(why, "; "))
}

// Is makes errors.Is(err, ErrBusy) hold.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// Close removes the mapping name. A mapping in use is left untouched and
// working, and Close returns a *BusyError after a bounded retry; a missing
// mapping wraps ErrNotFound. ctx cuts the retries short.
func Close(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	info, err := devmapper.InfoByName(name)
	if err != nil {
		return dmError("query", name, err)
	}
	for attempt := 0; ; attempt++ {
		err := devmapper.Remove(name)
		if err == nil {
			removeNode(name, info.DevNo)
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return dmError("remove", name, err)
		}
		if attempt+1 == closeAttempts {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dmcrypt: close %s: %w", name, ctx.Err())
		case <-time.After(closeBackoff(attempt)):
		}
	}
	busy := &BusyError{Name: name, Mounts: mountsOf(info.DevNo)}
	if st, err := Inspect(name); err == nil {
		busy.OpenCount = st.OpenCount
		busy.Holders = st.Holders
	}
	return busy
}

// mountsOf lists the mount points of device dev.
func mountsOf(dev uint64) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	want := fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint ...
		f := strings.Fields(sc.Text())
		if len(f) > 4 && f[2] == want {
			out = append(out, f[4])
		}
	}
	return out
}
