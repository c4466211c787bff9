package reencguest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/atrest/atrest/integration/vm/guest"
	"github.com/atrest/atrest/pkg/dmcrypt"
)

// blk is the unit the raw writer and the checks use.
const blk = 4096

// faulty is a dm-linear device over a loop device whose data area can be
// switched to an error target, the way a disk fails under a volume.
type faulty struct {
	name, loop string
	sectors    uint64
}

func newFaulty(t *testing.T, name string, sizeMiB int64) *faulty {
	t.Helper()
	f := &faulty{name: name, loop: guest.Disk(t, sizeMiB).Path, sectors: uint64(sizeMiB) << 11}
	guest.Run(t, "dmsetup", "create", "--noudevsync", name, "--table", fmt.Sprintf("0 %d linear %s 0", f.sectors, f.loop))
	t.Cleanup(func() { _, _ = guest.Try("dmsetup", "remove", "--noudevsync", name) })
	if _, err := os.Stat("/dev/mapper/" + name); err != nil {
		guest.Run(t, "dmsetup", "mknodes", name)
	}
	return f
}

func (f *faulty) path() string { return "/dev/mapper/" + f.name }

// swap loads table and swaps it in (suspend without flush, resume).
func (f *faulty) swap(t *testing.T, table string) {
	t.Helper()
	guest.Run(t, "dmsetup", "load", f.name, "--table", table)
	guest.Run(t, "dmsetup", "suspend", "--noflush", "--nolockfs", f.name)
	guest.Run(t, "dmsetup", "resume", "--noudevsync", f.name)
}

// fail makes every sector from fromSector on fail with EIO (reads,
// writes, flushes); heal gives the linear table back.
func (f *faulty) fail(t *testing.T, fromSector uint64) {
	f.swap(t, fmt.Sprintf("0 %d linear %s 0\n%d %d error", fromSector, f.loop, fromSector, f.sectors-fromSector))
}

// failHeader makes the sectors before dataSector (the LUKS2 header, its
// keyslots and the resilience area) fail with EIO, the data area working.
func (f *faulty) failHeader(t *testing.T, dataSector uint64) {
	f.swap(t, fmt.Sprintf("0 %d error\n%d %d linear %s %d", dataSector, dataSector, f.sectors-dataSector, f.loop, dataSector))
}

func (f *faulty) heal(t *testing.T) {
	f.swap(t, fmt.Sprintf("0 %d linear %s 0", f.sectors, f.loop))
}

// pattern is block i's content in generation gen.
func pattern(i, gen int) []byte {
	b := make([]byte, blk)
	for j := 0; j < blk; j += 32 {
		s := sha256.Sum256(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(i)), uint64(gen)))
		copy(b[j:], s[:])
	}
	return b
}

// rawWriter rewrites random blocks of a mapping, each write synced,
// until a write or sync fails; it records the generation of each block
// that was synced and the block whose write failed.
type rawWriter struct {
	done   chan error
	gen    []int // by block; 0 is the fill
	failed int
}

func startRawWriter(path string, blocks int, rng *rand.Rand) *rawWriter {
	w := &rawWriter{done: make(chan error, 1), gen: make([]int, blocks), failed: -1}
	go func() {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			w.done <- err
			return
		}
		defer f.Close()
		for g := 1; ; g++ {
			i := rng.IntN(blocks)
			_, err := f.WriteAt(pattern(i, g), int64(i)*blk)
			if err == nil {
				err = f.Sync()
			}
			if err != nil {
				w.failed = i
				w.done <- err
				return
			}
			w.gen[i] = g
			// An application's pace, not a loop that starves the run.
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return w
}

// directRead reads n blocks from block i of path bypassing the page
// cache.
func directRead(path string, i, n int) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf, err := unix.Mmap(-1, 0, n*blk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, err
	}
	defer unix.Munmap(buf)
	if _, err := f.ReadAt(buf, int64(i)*blk); err != nil {
		return nil, err
	}
	return bytes.Clone(buf), nil
}

// An I/O error of the disk under a volume in the middle of an online
// re-encryption ends the run as cryptsetup ends it: atrest exits with its
// own message and exit code, the hotzone device becomes an error target,
// so the writer gets EIO instead of waiting for ever, and once the fault
// is gone the hotzone's I/O keeps failing (nothing held lands out of
// order) while the rest of the volume reads back. Then the re-encryption
// is resumed, online by the next atrest reencrypt or offline after atrest
// close, and every block reads back as last written before the fault.
// The same holds when the fault hits the header area instead (the
// checksums of the resilience area and the header commits fail, the data
// area works), resumed online.
func TestOnlineReencryptIOError(t *testing.T) {
	for i, how := range []string{"online", "offline", "header"} {
		t.Run(how, func(t *testing.T) {
			n := newNode(t)
			name := fmt.Sprintf("ioe%d", i)
			t0 := time.Now()
			disk := newFaulty(t, fmt.Sprintf("flt%d", i), 24)
			// The loop device under the faulty one holds the same header:
			// name the device (a name would match both).
			n.want("format", disk.path(), "--name", name)
			n.want("open", disk.path())
			t.Cleanup(func() { _ = n.cmd("close", name).Run() })
			mapped := "/dev/mapper/" + name
			dataOff := guest.LUKSSegment(t, disk.path()).Offset
			size, err := os.ReadFile(fmt.Sprintf("/sys/class/block/%s/size", devName(t, mapped)))
			if err != nil {
				t.Fatal(err)
			}
			var sectors int
			fmt.Sscan(string(size), &sectors)
			blocks := sectors * 512 / blk
			fill(t, mapped, blocks)
			before, _ := luksDigests(t, disk.path())

			w := startRawWriter(mapped, blocks, rand.New(rand.NewPCG(uint64(i), 7)))
			run := n.cmd("reencrypt", disk.path(), "--hotzone-size", "1M")
			var out bytes.Buffer
			run.Stdout, run.Stderr = &out, &out
			if err := run.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- run.Wait() }()
			// The fault comes while the hotzone device holds the second
			// hotzone or a later one.
			stack := &dmcrypt.Stack{Name: name}
			for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(2 * time.Millisecond) {
				if lo, err := stack.FindLeftover(); err == nil && lo != nil && lo.Suspended && lo.HotStart > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no second hotzone held within two minutes: %s", out.String())
				}
			}
			if how == "header" {
				t.Logf("%.1fs: second hotzone held; the disk's header area fails", time.Since(t0).Seconds())
				disk.failHeader(t, dataOff/512)
			} else {
				t.Logf("%.1fs: second hotzone held; the disk fails", time.Since(t0).Seconds())
				disk.fail(t, dataOff/512)
			}
			err = <-exited
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 15 || !strings.Contains(out.String(), "failed in the middle of a hotzone") {
				t.Fatalf("atrest reencrypt on a failing disk: %v, want exit 15 naming the failed hotzone:\n%s", err, out.String())
			}
			// Where the fault lands (a header read, a write's sync) is
			// logged, not chosen; a failing header area is never called
			// a device without LUKS (status below reads it for certain).
			if how == "header" && strings.Contains(out.String(), "no LUKS header") {
				t.Fatalf("a header area that fails is reported as no LUKS header (a disk failing, not a disk without LUKS):\n%s", out.String())
			}
			select {
			case err := <-w.done:
				if !errors.Is(err, syscall.EIO) {
					t.Fatalf("the writer ended with %v, want EIO", err)
				}
			case <-time.After(2 * time.Minute):
				t.Fatal("the writer hangs after the failed run")
			}
			lo, err := stack.FindLeftover()
			if err != nil || lo == nil || !lo.Failed || lo.Suspended {
				t.Fatalf("after the failed run the stack is %+v (%v), want the hotzone device an error target, not suspended", lo, err)
			}
			for _, l := range strings.Split(out.String(), "\n") {
				if strings.Contains(l, "error") {
					t.Logf("atrest said: %s", l)
				}
			}

			if how == "header" {
				// status of the failing device says it fails, not that it
				// holds no LUKS volume.
				var sout, serr bytes.Buffer
				st := n.cmd("status", disk.path())
				st.Stdout, st.Stderr = &sout, &serr
				err := st.Run()
				if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(serr.String(), "the header cannot be read") || !strings.Contains(serr.String(), "it is failing, not blank") {
					t.Fatalf("status of a device whose header area fails: %v, want exit 1 saying the header cannot be read:\n%s%s", err, sout.String(), serr.String())
				}
				// header check names the backup, to restore with force.
				sout.Reset()
				serr.Reset()
				hc := n.cmd("header", "check", disk.path())
				hc.Stdout, hc.Stderr = &sout, &serr
				err = hc.Run()
				if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(serr.String(), "the header cannot be read") || !strings.Contains(serr.String(), "atrest header restore "+disk.path()+" --backup ") || !strings.Contains(serr.String(), "--force") {
					t.Fatalf("header check of a device whose header area fails: %v, want exit 1 naming the backup to restore with --force:\n%s%s", err, sout.String(), serr.String())
				}
			}
			t.Logf("%.1fs: the run and the writer ended; the disk is healed", time.Since(t0).Seconds())
			disk.heal(t)
			if _, types := luksDigests(t, disk.path()); !strings.Contains(strings.Join(types, " "), "reencrypt") {
				t.Fatalf("the header has no re-encryption after the failed run: %v", types)
			}
			hot, other := int(lo.HotStart*512/blk), int((lo.HotStart+lo.HotSectors)*512/blk)%blocks
			if _, err := directRead(mapped, hot, 1); !errors.Is(err, syscall.EIO) {
				t.Fatalf("a read of the failed hotzone after the fault is gone: %v, want EIO", err)
			}
			if b, err := directRead(mapped, other, 1); err != nil || !bytes.Equal(b, pattern(other, w.gen[other])) {
				t.Fatalf("block %d outside the hotzone after the fault is gone: %v", other, err)
			}

			if how != "offline" {
				if r := parseReport(t, n.want("-o", "json", "reencrypt", disk.path())); !r.Volumes[0].Resumed {
					t.Fatalf("the online resume: %+v", r.Volumes[0])
				}
				n.want("close", name)
			} else {
				n.want("close", name)
				for _, h := range []string{name + "-overlay", name + "-hotzone-forward"} {
					if _, err := dmcrypt.Inspect(h); err == nil {
						t.Fatalf("atrest close left %s", h)
					}
				}
				if r := parseReport(t, n.want("-o", "json", "reencrypt", disk.path())); !r.Volumes[0].Resumed {
					t.Fatalf("the offline resume: %+v", r.Volumes[0])
				}
			}
			if after, _ := luksDigests(t, disk.path()); after == before {
				t.Fatal("the header's key digest did not change: no new volume key")
			}
			t.Logf("%.1fs: resumed", time.Since(t0).Seconds())
			n.want("open", disk.path())
			all, err := directRead(mapped, 0, blocks)
			if err != nil {
				t.Fatal(err)
			}
			for b := 0; b < blocks; b++ {
				if b != w.failed && !bytes.Equal(all[b*blk:(b+1)*blk], pattern(b, w.gen[b])) {
					t.Fatalf("block %d after the resume is not generation %d, the last written before the fault", b, w.gen[b])
				}
			}
			t.Logf("%d blocks intact, the writer's %d synced writes among them", blocks-1, countWritten(w.gen))
		})
	}
}

func countWritten(gen []int) int {
	n := 0
	for _, g := range gen {
		if g > 0 {
			n++
		}
	}
	return n
}

// fill writes generation 0 of every block of the mapping at path.
func fill(t *testing.T, path string, blocks int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := 0; i < blocks; i++ {
		if _, err := f.WriteAt(pattern(i, 0), int64(i)*blk); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// devName is the kernel name (dm-N) of the device node path.
func devName(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	b, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	if err != nil {
		t.Fatal(err)
	}
	return b[strings.LastIndex(b, "/")+1:]
}
