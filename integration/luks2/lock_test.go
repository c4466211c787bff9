package luks2

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/luks2/devlock"
)

// TestLockingWithCryptsetup: while atrest holds the write lock of a loop
// device, cryptsetup waits for it (its flock shows as blocked in
// /proc/locks) and proceeds once atrest lets go; the lock file is the one
// cryptsetup uses, /run/cryptsetup/L_<major>:<minor>.
func TestLockingWithCryptsetup(t *testing.T) {
	requireTier(t)
	testutil.RequireCommand(t, "flock", "util-linux")
	path := loopDevice(t, 40*mib)
	formatAtrest(t, path, luks2.FormatOptions{})
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	res := devlock.Resource(st.Rdev)
	if want := fmt.Sprintf("/run/cryptsetup/L_%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)); res != want {
		t.Fatalf("lock resource %s, want %s", res, want)
	}
	dev := openDev(t, path)
	release, err := dev.Lock(ctx(t), true)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cryptsetup", "luksDump", path)
	out := &strings.Builder{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if err := waitBlocked(ctx(t), cmd.Process.Pid, done); err != nil {
		release()
		t.Fatal(err)
	}
	if out.Len() != 0 {
		t.Fatal("cryptsetup printed the header while atrest held the write lock")
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("cryptsetup after the lock was released: %v", err)
	}
	if !strings.Contains(out.String(), "LUKS header information") {
		t.Fatalf("cryptsetup output: %s", out.String())
	}

	// And the other way: while another process holds a read lock (util-linux
	// flock, as cryptsetup would during a read), atrest cannot take the
	// write lock.
	if err := os.WriteFile(res, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("flock", "--shared", res, "cat")
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	defer stdin.Close()
	if err := waitHeld(ctx(t), holder.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if l, err := devlock.TryAcquire(path, true); !errors.Is(err, unix.EWOULDBLOCK) {
		l.Release()
		t.Fatalf("write lock while another process holds a read lock: %v", err)
	}
	if _, err := luks2.Erase(ctxTimeout(t, 200*time.Millisecond), dev); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("erase while the device is locked: %v, want it to wait", err)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

// waitHeld waits until process pid holds an flock (a granted FLOCK line of
// /proc/locks names it).
func waitHeld(ctx context.Context, pid int) error {
	for {
		b, err := os.ReadFile("/proc/locks")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && f[1] == "FLOCK" && f[4] == fmt.Sprint(pid) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitBlocked waits until process pid waits for an flock (a "->" line of
// /proc/locks names it), or fails if it exits first.
func waitBlocked(ctx context.Context, pid int, done <-chan error) error {
	for {
		f, err := os.Open("/proc/locks")
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 5 && fields[1] == "->" && fields[2] == "FLOCK" && fields[5] == fmt.Sprint(pid) {
				f.Close()
				return nil
			}
		}
		f.Close()
		select {
		case err := <-done:
			return fmt.Errorf("cryptsetup finished (%v) without waiting for atrest's lock", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
