package luks2

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// Fault injection: every header mutation is run against a device that
// "loses power" after N bytes (the write crossing N lands partially), for N
// at every write boundary and at every 512-byte sector inside header writes;
// against a device on which one write fails with an I/O error, for each
// write; and against a device that keeps any one or two writes, or all but
// one, of those made since the last Sync (disk caches reorder). After each crash the device is
// read back: it must hold one of the states the operation passes through at
// its syncs (the old header, an intermediate one, the new one), and every
// keyslot of that state must open with its passphrase and yield the volume
// key.

var errPowerLoss = errors.New("power loss")

type opWrite struct {
	off  int64
	data []byte
}

// recDevice records writes, grouped by the Sync that makes them durable.
type recDevice struct {
	*memDevice
	epochs [][]opWrite
	onSync func()
}

func (r *recDevice) WriteAt(p []byte, off int64) (int, error) {
	r.epochs[len(r.epochs)-1] = append(r.epochs[len(r.epochs)-1], opWrite{off, append([]byte(nil), p...)})
	return r.memDevice.WriteAt(p, off)
}

func (r *recDevice) Sync() error {
	r.epochs = append(r.epochs, nil)
	if r.onSync != nil {
		r.onSync()
	}
	return nil
}

// budgetDevice fails every write once budget bytes have been written.
type budgetDevice struct {
	*memDevice
	budget int
}

func (b *budgetDevice) WriteAt(p []byte, off int64) (int, error) {
	if b.budget <= 0 {
		return 0, errPowerLoss
	}
	n := min(len(p), b.budget)
	b.memDevice.WriteAt(p[:n], off)
	b.budget -= n
	if n < len(p) {
		return n, errPowerLoss
	}
	return n, nil
}

// faultDevice fails write number fail (counting from 0) with an I/O error,
// landing none of it; every other write goes through, as on a disk with
// one bad write.
type faultDevice struct {
	*memDevice
	fail, n int
}

var errInjectedIO = errors.New("injected I/O error")

func (f *faultDevice) WriteAt(p []byte, off int64) (int, error) {
	f.n++
	if f.n-1 == f.fail {
		return 0, errInjectedIO
	}
	return f.memDevice.WriteAt(p, off)
}

// stopDevice loses power after its first syncs Syncs: later writes fail.
type stopDevice struct {
	*memDevice
	syncs int
}

func (s *stopDevice) WriteAt(p []byte, off int64) (int, error) {
	if s.syncs <= 0 {
		return 0, errPowerLoss
	}
	return s.memDevice.WriteAt(p, off)
}

func (s *stopDevice) Sync() error {
	s.syncs--
	return nil
}

// crashCase describes one operation under test.
type crashCase struct {
	name  string
	setup func(t *testing.T) *memDevice // the device before the operation
	op    func(dev Device) error
	// passphrases that may open keyslots in any state
	passphrases []string
	// minSlots is the least number of keyslots every state must have.
	minSlots int
	// sameJSON: the operation leaves the JSON metadata as it was (repair).
	sameJSON bool
}

// detReader is a deterministic byte stream (SHA-256 in counter mode).
type detReader struct {
	n   uint64
	buf []byte
}

func (d *detReader) Read(p []byte) (int, error) {
	for i := range p {
		if len(d.buf) == 0 {
			var ctr [8]byte
			binary.BigEndian.PutUint64(ctr[:], d.n)
			d.n++
			sum := sha256.Sum256(ctr[:])
			d.buf = sum[:]
		}
		p[i] = d.buf[0]
		d.buf = d.buf[1:]
	}
	return len(p), nil
}

// deterministic runs op with a fixed salt stream, so that every run of the
// same operation writes the same metadata.
func deterministic(op func(Device) error) func(Device) error {
	return func(dev Device) error {
		saved := saltSource
		saltSource = &detReader{}
		defer func() { saltSource = saved }()
		return op(dev)
	}
}

func runCrashCase(t *testing.T, c crashCase, vkCheck func(*testing.T, *memDevice, *Header)) {
	base := c.setup(t)
	c.op = deterministic(c.op)
	// Dry run: record writes and the durable states.
	var states []string
	rec := &recDevice{memDevice: base.snapshot(), epochs: [][]opWrite{nil}}
	record := func() {
		h, err := Read(context.Background(), rec.memDevice)
		if err != nil {
			t.Fatalf("%s: state at a sync point unreadable: %v", c.name, err)
		}
		// A reader falls back to the other copy when the chosen one is
		// damaged later, so its state is one the device may show too.
		for _, c := range []*Header{h, h.other} {
			if s := c; s != nil && !slices.Contains(states, stateOf(s)) {
				states = append(states, stateOf(s))
			}
		}
	}
	record()
	rec.onSync = record
	if err := c.op(rec); err != nil {
		t.Fatalf("%s: dry run: %v", c.name, err)
	}
	if len(states) < 2 && !c.sameJSON {
		t.Fatalf("%s: the operation changed nothing", c.name)
	}
	check := func(what string, img *memDevice) {
		t.Helper()
		h, err := Read(context.Background(), img)
		if err != nil {
			t.Fatalf("%s: after %s: unreadable: %v", c.name, what, err)
		}
		if !slices.Contains(states, stateOf(h)) {
			t.Fatalf("%s: after %s: header is neither old, intermediate nor new:\n%s", c.name, what, stateOf(h))
		}
		if len(h.Keyslots) < c.minSlots {
			t.Fatalf("%s: after %s: %d keyslots", c.name, what, len(h.Keyslots))
		}
		vkCheck(t, img, h)
	}
	// Byte budgets at every write boundary and every sector inside writes.
	var budgets []int
	total := 0
	for _, ep := range rec.epochs {
		for _, w := range ep {
			// Every sector of header writes; a few points inside the
			// large keyslot area writes.
			step := 512
			if len(w.data) > DefaultMetadataSize {
				step = len(w.data) / 8
			}
			for i := 0; i < len(w.data); i += step {
				budgets = append(budgets, total+i, total+i+1)
			}
			total += len(w.data)
			budgets = append(budgets, total-1, total)
		}
	}
	slices.Sort(budgets)
	budgets = slices.Compact(budgets)
	if testing.Short() && len(budgets) > 40 {
		budgets = budgets[:0:0]
		for i := 0; i <= 40; i++ {
			budgets = append(budgets, total*i/40)
		}
	}
	for _, n := range budgets {
		dev := &budgetDevice{memDevice: base.snapshot(), budget: n}
		err := c.op(dev)
		if n < total && err == nil {
			t.Fatalf("%s: budget %d of %d: operation reported success", c.name, n, total)
		}
		check(fmt.Sprintf("power loss after %d of %d bytes", n, total), dev.memDevice)
	}
	// I/O errors: each write in turn fails while the others land (what
	// the operation does after a failed write runs too).
	writes := 0
	for _, ep := range rec.epochs {
		writes += len(ep)
	}
	for k := range writes {
		dev := &faultDevice{memDevice: base.snapshot(), fail: k}
		if err := c.op(dev); err == nil {
			t.Fatalf("%s: I/O error on write %d of %d not reported", c.name, k, writes)
		}
		check(fmt.Sprintf("I/O error on write %d of %d", k, writes), dev.memDevice)
	}
	// Lost writes: each epoch with none, all, each single and all-but-one
	// of its writes.
	img := base.snapshot()
	for e, ep := range rec.epochs {
		subsets := [][]int{nil}
		all := make([]int, len(ep))
		for i := range ep {
			all[i] = i
			subsets = append(subsets, []int{i})
			for j := i + 1; j < len(ep) && len(ep) <= 8; j++ {
				subsets = append(subsets, []int{i, j})
			}
		}
		for i := range ep {
			var but []int
			for j := range ep {
				if j != i {
					but = append(but, j)
				}
			}
			subsets = append(subsets, but)
		}
		subsets = append(subsets, all)
		for _, sub := range subsets {
			trial := img.snapshot()
			for _, i := range sub {
				trial.WriteAt(ep[i].data, ep[i].off)
			}
			check(fmt.Sprintf("sync epoch %d with writes %v of %d", e, sub, len(ep)), trial)
		}
		for _, w := range ep {
			img.WriteAt(w.data, w.off)
		}
	}
}

// stateOf identifies a header state: its JSON metadata.
func stateOf(h *Header) string { return string(h.encodeJSON()) }
