package luks2

import (
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync"
)

// The offline data path's throughput: the hotzone's checksums and its
// decryption and encryption are spread over the cores (the XTS ciphers'
// round keys are only read, so the pieces share them), and with ReadAhead
// the next hotzone is read while this one is re-encrypted, written and
// synced, so that the device is rarely idle.

// minPiece is the least data one goroutine takes: below it, starting one
// costs more than it saves.
const minPiece = 1 << 20

// spread runs f over [0, n) in pieces of whole units, about one per core,
// and waits for them.
func spread(n, unit int, f func(lo, hi int)) {
	k := min(runtime.GOMAXPROCS(0), n/minPiece)
	if k <= 1 {
		f(0, n)
		return
	}
	per := (n/unit + k - 1) / k * unit
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += per {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			f(lo, hi)
		}(lo, min(lo+per, n))
	}
	wg.Wait()
}

// checksums returns the sha256 of each checksum block of buf, in order:
// the resilience data of a hotzone.
func (r *Reencryptor) checksums(buf []byte) []byte {
	blk := int(r.st.BlockSize)
	sums := make([]byte, len(buf)/blk*sha256.Size)
	spread(len(buf), blk, func(lo, hi int) {
		for b := lo; b < hi; b += blk {
			s := sha256.Sum256(buf[b : b+blk])
			copy(sums[b/blk*sha256.Size:], s[:])
		}
	})
	return sums
}

// recrypt decrypts buf, the data at pos (bytes from the data offset), with
// the old key and encrypts it with the new, sector by sector so that each
// sector is still in the cache for its second pass. The plain64 IV counts
// 512-byte sectors from the data offset whatever the encryption sector
// size.
func (r *Reencryptor) recrypt(buf []byte, pos uint64) {
	sec := int(r.sector)
	spread(len(buf), sec, func(lo, hi int) {
		for s := lo; s < hi; s += sec {
			b, iv := buf[s:s+sec], (pos+uint64(s))/512
			r.oldX.cryptSectors(b, sec, iv, false)
			r.newX.cryptSectors(b, sec, iv, true)
		}
	})
}

// readAhead is a read of the next hotzone in flight, with its checksums.
type readAhead struct {
	off  uint64
	buf  []byte
	sums []byte
	done chan error
}

// startReadAhead reads len(buf) bytes at off into buf in the background,
// for the step that will get buf, and computes their checksums.
func (r *Reencryptor) startReadAhead(buf []byte, off uint64) {
	a := &readAhead{off: off, buf: buf, done: make(chan error, 1)}
	go func() {
		_, err := r.dev.ReadAt(buf, int64(off))
		if err == nil {
			a.sums = r.checksums(buf)
		}
		a.done <- err
	}()
	r.ahead = a
}

// waitReadAhead waits for a read ahead in flight, so that nothing touches
// the device or the buffer after Run returns.
func (r *Reencryptor) waitReadAhead() error {
	if r.ahead == nil {
		return nil
	}
	err := <-r.ahead.done
	r.ahead = nil
	return err
}

// readHotzone fills buf with the data at off and returns its checksums:
// from the read ahead when it was for this buffer and offset, from the
// device otherwise.
func (r *Reencryptor) readHotzone(buf []byte, off uint64) ([]byte, error) {
	if a := r.ahead; a != nil && a.off == off && len(a.buf) == len(buf) && &a.buf[0] == &buf[0] {
		if err := r.waitReadAhead(); err != nil {
			return nil, fmt.Errorf("luks2: read hotzone at %d: %w", off, err)
		}
		return a.sums, nil
	}
	if err := r.waitReadAhead(); err != nil {
		return nil, fmt.Errorf("luks2: read ahead: %w", err)
	}
	if _, err := r.dev.ReadAt(buf, int64(off)); err != nil {
		return nil, fmt.Errorf("luks2: read hotzone at %d: %w", off, err)
	}
	return r.checksums(buf), nil
}
