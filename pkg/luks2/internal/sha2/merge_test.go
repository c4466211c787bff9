package sha2

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"testing"
)

// mergeOne is the merge of one key with Diffuser, as af.MergeBytes runs
// it.
func mergeOne(src []byte, stripes int) []byte {
	block := make([]byte, MergeKeySize)
	diffuse := Diffuser("sha256", make([]byte, ScratchSize))
	for s := range stripes - 1 {
		for i := range block {
			block[i] ^= src[s*MergeKeySize+i]
		}
		diffuse(block)
	}
	for i := range block {
		block[i] ^= src[(stripes-1)*MergeKeySize+i]
	}
	return block
}

// TestMergeSHA256LanesMatchesOneByOne merges batches of one to eight keys
// of random material, over 1, 2, 3 and 4000 stripes, at every scratch
// alignment, and compares each key with its merge alone.
func TestMergeSHA256LanesMatchesOneByOne(t *testing.T) {
	if !CanMergeLanes() {
		t.Skip("no AVX-512 here: MergeSHA256Lanes refuses (TestMergeSHA256LanesRefuses)")
	}
	for _, stripes := range []int{1, 2, 3, 4000} {
		for n := 1; n <= MergeLanes; n++ {
			t.Run(fmt.Sprintf("%d stripes/%d keys", stripes, n), func(t *testing.T) {
				jobs := make([]MergeJob, n)
				for i := range jobs {
					jobs[i] = MergeJob{Src: make([]byte, MergeKeySize*stripes+i), Dst: make([]byte, MergeKeySize)}
					rand.Read(jobs[i].Src)
				}
				scratch := make([]byte, MergeScratchSize+n)
				if !MergeSHA256Lanes(jobs, stripes, scratch[n:]) {
					t.Fatal("not merged")
				}
				for i, j := range jobs {
					if want := mergeOne(j.Src, stripes); !bytes.Equal(j.Dst, want) {
						t.Fatalf("key %d: got %x, want %x", i, j.Dst, want)
					}
				}
				if !bytes.Equal(scratch, make([]byte, len(scratch))) {
					t.Error("scratch not cleared")
				}
			})
		}
	}
}

// BenchmarkMergeSHA256Lanes merges eight 64-byte keys over 4000 stripes,
// a batch of keyslots' merges: ns/key against BenchmarkMergeOne's ns/op.
func BenchmarkMergeSHA256Lanes(b *testing.B) {
	if !CanMergeLanes() {
		b.Skip("no AVX-512")
	}
	jobs := make([]MergeJob, MergeLanes)
	for i := range jobs {
		jobs[i] = MergeJob{Src: make([]byte, MergeKeySize*4000), Dst: make([]byte, MergeKeySize)}
	}
	scratch := make([]byte, MergeScratchSize)
	for b.Loop() {
		MergeSHA256Lanes(jobs, 4000, scratch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/MergeLanes, "ns/key")
}

// BenchmarkMergeOne merges one 64-byte key over 4000 stripes with
// Diffuser, as each keyslot of a batch did.
func BenchmarkMergeOne(b *testing.B) {
	src := make([]byte, MergeKeySize*4000)
	for b.Loop() {
		mergeOne(src, 4000)
	}
}

// TestMergeSHA256LanesRefuses: a set the lanes cannot merge is refused
// with nothing written, and so is every set where the CPU has no AVX-512.
func TestMergeSHA256LanesRefuses(t *testing.T) {
	job := func(keyLen, stripes int) MergeJob {
		return MergeJob{Src: make([]byte, MergeKeySize*stripes), Dst: make([]byte, keyLen)}
	}
	scratch := make([]byte, MergeScratchSize)
	for name, c := range map[string]struct {
		jobs    []MergeJob
		stripes int
		scratch []byte
	}{
		"no jobs":            {nil, 4000, scratch},
		"nine jobs":          {[]MergeJob{job(64, 2), job(64, 2), job(64, 2), job(64, 2), job(64, 2), job(64, 2), job(64, 2), job(64, 2), job(64, 2)}, 2, scratch},
		"a 32-byte key":      {[]MergeJob{job(64, 2), job(32, 2)}, 2, scratch},
		"material too short": {[]MergeJob{job(64, 3)}, 4, scratch},
		"no stripes":         {[]MergeJob{job(64, 1)}, 0, scratch},
		"scratch too small":  {[]MergeJob{job(64, 2)}, 2, scratch[:MergeScratchSize-1]},
	} {
		for i := range c.jobs {
			c.jobs[i].Dst[0] = 0xAA
		}
		if MergeSHA256Lanes(c.jobs, c.stripes, c.scratch) {
			t.Errorf("%s: merged", name)
		}
		for i, j := range c.jobs {
			if j.Dst[0] != 0xAA {
				t.Errorf("%s: job %d written", name, i)
			}
		}
	}
	if !CanMergeLanes() && MergeSHA256Lanes([]MergeJob{job(64, 2)}, 2, scratch) {
		t.Error("merged without AVX-512")
	}
}
