package sha2

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha512"
	mrand "math/rand/v2"
	"strconv"
	"testing"
)

// TestPBKDF2SHA512LanesMatchesStandard compares every lane of batches of
// one to eight derivations with crypto/pbkdf2: passwords from empty to a
// whole block, salts around the block boundaries, iteration counts that
// differ within a batch (1, 2, 1000, 1001), outputs of 1 to 64 bytes, at
// every scratch alignment, on AVX-512 and AVX2 (where the CPU has them)
// and without.
func TestPBKDF2SHA512LanesMatchesStandard(t *testing.T) {
	switch {
	case haveAVX512:
		t.Log("AVX-512: the eight-lane compression runs, then AVX2's four-lane one")
	case haveAVX2:
		t.Log("AVX2: the four-lane compression runs")
	}
	both(t, func(t *testing.T) {
		r := mrand.New(mrand.NewPCG(1, 2))
		passwords := []int{0, 1, 32, 64, 127, 128}
		salts := []int{0, 16, 32, 111, 112, 124, 128, 300}
		iterations := []int{1, 2, 1000, 1001}
		outs := []int{1, 32, 63, 64}
		for round := range 40 {
			n := 1 + round%Lanes
			jobs := make([]LaneJob, n)
			for i := range jobs {
				jobs[i] = LaneJob{
					Password:   random(t, passwords[r.IntN(len(passwords))]),
					Salt:       random(t, salts[r.IntN(len(salts))]),
					Iterations: iterations[r.IntN(len(iterations))],
					Dst:        make([]byte, outs[r.IntN(len(outs))]),
				}
			}
			if round < 4 { // at least one batch where every lane runs the whole way
				for i := range jobs {
					jobs[i].Iterations = 1000
				}
			}
			scratch := make([]byte, LanesScratchSize+round%64)
			if !PBKDF2SHA512Lanes(jobs, scratch[round%64:]) {
				t.Fatalf("round %d: %d jobs not handled", round, n)
			}
			for i, j := range jobs {
				want, err := pbkdf2.Key(sha512.New, string(j.Password), j.Salt, j.Iterations, len(j.Dst))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(j.Dst, want) {
					t.Fatalf("round %d lane %d of %d (password %d, salt %d, %d iterations, %d bytes): got %x, want %x",
						round, i, n, len(j.Password), len(j.Salt), j.Iterations, len(j.Dst), j.Dst, want)
				}
			}
			if !bytes.Equal(scratch, make([]byte, len(scratch))) {
				t.Fatal("scratch not cleared")
			}
		}
	})
}

// TestPBKDF2SHA512LanesRefuses: what the lanes cannot do is refused
// before anything is written.
func TestPBKDF2SHA512LanesRefuses(t *testing.T) {
	ok := LaneJob{Password: []byte("p"), Salt: []byte("s"), Iterations: 1000, Dst: make([]byte, 64)}
	for name, jobs := range map[string][]LaneJob{
		"none":           nil,
		"nine":           make([]LaneJob, 9),
		"long output":    {ok, {Password: []byte("p"), Iterations: 1000, Dst: make([]byte, 65)}},
		"no output":      {{Password: []byte("p"), Iterations: 1000}},
		"long password":  {{Password: make([]byte, 129), Iterations: 1000, Dst: make([]byte, 64)}},
		"zero iteration": {{Password: []byte("p"), Dst: make([]byte, 64)}},
	} {
		for i := range jobs {
			if jobs[i].Dst == nil && name == "nine" {
				jobs[i] = ok
			}
		}
		if PBKDF2SHA512Lanes(jobs, make([]byte, LanesScratchSize)) {
			t.Errorf("%s: accepted", name)
		}
		for _, j := range jobs {
			if !bytes.Equal(j.Dst, make([]byte, len(j.Dst))) {
				t.Errorf("%s: output written", name)
			}
		}
	}
}

// BenchmarkPBKDF2SHA512Lanes is n PBKDF2-SHA512/1000 derivations at
// once, n from 1 to Lanes; ns/derivation is the cost of one, against
// BenchmarkPBKDF2SHA512's one at a time. cpu-ns/op is about the same
// for every n up to LaneWidth, the fact OpenKeyslots' groups rest on.
func BenchmarkPBKDF2SHA512Lanes(b *testing.B) {
	for n := 1; n <= Lanes; n++ {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			jobs := make([]LaneJob, n)
			for i := range jobs {
				jobs[i] = LaneJob{Password: []byte("platform secret"), Salt: make([]byte, 32), Iterations: 1000, Dst: make([]byte, 64)}
			}
			scratch := make([]byte, LanesScratchSize)
			defer cpuPerOp(b)()
			for range b.N {
				PBKDF2SHA512Lanes(jobs, scratch)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/derivation")
		})
	}
}
