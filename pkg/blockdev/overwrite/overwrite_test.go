package overwrite

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// memTarget is an in-memory device that can fail a write or the sync.
type memTarget struct {
	data      []byte
	failAt    int64 // WriteAt at this offset fails; -1 never
	syncErr   error
	syncCalls int
}

func (m *memTarget) WriteAt(p []byte, off int64) (int, error) {
	if off == m.failAt {
		return 0, errors.New("injected I/O error")
	}
	return copy(m.data[off:], p), nil
}

func (m *memTarget) Sync() error { m.syncCalls++; return m.syncErr }

func TestWriteZeroesOnlyTheRanges(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "dev"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	orig := bytes.Repeat([]byte{0xA5}, 64<<10)
	if _, err := f.WriteAt(orig, 0); err != nil {
		t.Fatal(err)
	}
	ranges := []Range{{0, 6, "a"}, {0x4000, 6, "b"}, {0x8000, 10000, "c"}}
	var reports []Progress
	err = Write(context.Background(), f, ranges, Options{ChunkSize: 4096, Progress: func(p Progress) { reports = append(reports, p) }})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(f.Name())
	want := bytes.Clone(orig)
	for _, r := range ranges {
		clear(want[r.Offset:r.End()])
	}
	if !bytes.Equal(got, want) {
		t.Fatal("file differs from the original with exactly the ranges zeroed")
	}
	// 1 initial + 1 + 1 + 3 chunks (4096+4096+1808).
	if len(reports) != 6 {
		t.Fatalf("got %d progress reports, want 6: %+v", len(reports), reports)
	}
	last := reports[len(reports)-1]
	if last.Done != last.Total || last.Total != 10012 || last.Range.Label != "c" {
		t.Fatalf("last report %+v, want done=total=10012 in range c", last)
	}
	for i := 1; i < len(reports); i++ {
		if reports[i].Done < reports[i-1].Done {
			t.Fatalf("progress went backwards: %+v", reports)
		}
	}
}

func TestWriteFromSource(t *testing.T) {
	m := &memTarget{data: make([]byte, 100), failAt: -1}
	src := bytes.NewReader(bytes.Repeat([]byte{7}, 30))
	if err := Write(context.Background(), m, []Range{{10, 30, "r"}}, Options{Source: src, ChunkSize: 8}); err != nil {
		t.Fatal(err)
	}
	for i, b := range m.data {
		if want := byte(0); i >= 10 && i < 40 {
			want = 7
			if b != want {
				t.Fatalf("byte %d = %d, want %d", i, b, want)
			}
		} else if b != want {
			t.Fatalf("byte %d = %d, want %d", i, b, want)
		}
	}
	if m.syncCalls != 1 {
		t.Fatalf("sync called %d times, want 1", m.syncCalls)
	}
}

func TestWriteReportsWhereItFailed(t *testing.T) {
	m := &memTarget{data: bytes.Repeat([]byte{1}, 64), failAt: 40}
	err := Write(context.Background(), m, []Range{{0, 8, "first"}, {32, 16, "second"}, {56, 8, "third"}}, Options{ChunkSize: 8})
	var oe *Error
	if !errors.As(err, &oe) {
		t.Fatalf("got %v, want *Error", err)
	}
	if oe.Range.Label != "second" || oe.Written != 8 || oe.Sync {
		t.Fatalf("error %+v, want range second with 8 bytes written", oe)
	}
	if m.data[56] != 1 {
		t.Fatal("a range after the failure was written")
	}
	if m.syncCalls != 0 {
		t.Fatal("synced after a failed write")
	}
}

func TestWriteSyncFailure(t *testing.T) {
	m := &memTarget{data: make([]byte, 8), failAt: -1, syncErr: errors.New("EIO")}
	err := Write(context.Background(), m, []Range{{0, 8, "r"}}, Options{})
	var oe *Error
	if !errors.As(err, &oe) || !oe.Sync {
		t.Fatalf("got %v, want *Error with Sync set", err)
	}
}

func TestWriteRefusesBadRangesBeforeWriting(t *testing.T) {
	m := &memTarget{data: bytes.Repeat([]byte{1}, 16), failAt: -1}
	err := Write(context.Background(), m, []Range{{0, 4, "ok"}, {-1, 4, "bad"}}, Options{})
	if !errors.Is(err, ErrBadRange) {
		t.Fatalf("got %v, want ErrBadRange", err)
	}
	if m.data[0] != 1 {
		t.Fatal("wrote before validating every range")
	}
}

func TestWriteStopsOnCancel(t *testing.T) {
	m := &memTarget{data: bytes.Repeat([]byte{1}, 64), failAt: -1}
	ctx, cancel := context.WithCancel(context.Background())
	err := Write(ctx, m, []Range{{0, 64, "r"}}, Options{ChunkSize: 8, Progress: func(p Progress) {
		if p.Done == 16 {
			cancel()
		}
	}})
	var oe *Error
	if !errors.As(err, &oe) || !errors.Is(err, context.Canceled) || oe.Written != 16 {
		t.Fatalf("got %v, want cancellation after 16 bytes", err)
	}
	if m.data[16] != 1 {
		t.Fatal("wrote past the cancellation")
	}
}
