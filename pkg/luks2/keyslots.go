package luks2

import (
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/atrest/atrest/pkg/luks2/af"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

// KeyslotJob is one keyslot for OpenKeyslots: keyslot Slot of Header on
// Dev, opened with Passphrase.
type KeyslotJob struct {
	Header     *Header
	Dev        io.ReaderAt
	Slot       int
	Passphrase *secret.Key
}

// OpenKeyslots opens many keyslots, each as OpenKeyslot does, and returns
// each job's volume key (the caller wipes them) or error. The jobs are
// spread over GOMAXPROCS goroutines, and keyslots whose KDF is
// PBKDF2-SHA512 (atrest's platform and recovery keyslots,
// systemd-cryptenroll's) derive their keys in groups of up to
// kdf.LaneWidth, all of a group's iterations at once (kdf.DeriveLanes): a
// batch unlock's largest cost.
//
// A group costs about what two keyslots' KDFs one by one do, whatever its
// size, so while there are no more such keyslots than goroutines each is
// opened alone, on a core of its own (one volume's unlock, or two on two
// cores, costs what OpenKeyslot does, not twice that); beyond, they go in
// as few groups as kdf.LaneWidth allows. Without AVX-512 or AVX2
// (LaneWidth 0) each keyslot is opened alone.
func OpenKeyslots(jobs []KeyslotJob) ([]*secret.Key, []error) {
	keys, errs := make([]*secret.Key, len(jobs)), make([]error, len(jobs))
	prep := make([]prepared, len(jobs))
	width, workers := kdf.LaneWidth(), runtime.GOMAXPROCS(0)
	var lanes, alone []int
	for i, j := range jobs {
		k, d, err := j.Header.openable(j.Slot)
		if err == nil && width > 0 && kdf.Laneable(k.KDF, j.Passphrase.Len(), k.Area.KeySize) {
			prep[i] = prepared{k, d}
			lanes = append(lanes, i)
		} else {
			alone = append(alone, i) // OpenKeyslot meets its error again
		}
	}
	var tasks [][]int
	if n := len(lanes); n > workers {
		// Every group has at least two keyslots: n ≥ 2, and n over
		// ⌈n/width⌉ groups is at least width/2 once n > width.
		g := (n + width - 1) / width
		for s := range g {
			tasks = append(tasks, lanes[s*n/g:(s+1)*n/g])
		}
	} else {
		alone = append(alone, lanes...)
	}
	for _, i := range alone {
		tasks = append(tasks, []int{i})
	}
	work := make(chan []int)
	var wg sync.WaitGroup
	for range min(workers, len(tasks)) {
		wg.Go(func() {
			for t := range work {
				if len(t) == 1 {
					j := jobs[t[0]]
					keys[t[0]], errs[t[0]] = j.Header.OpenKeyslot(j.Dev, j.Slot, j.Passphrase)
					continue
				}
				openLanes(jobs, prep, t, keys, errs)
			}
		})
	}
	for _, t := range tasks {
		work <- t
	}
	close(work)
	wg.Wait()
	return keys, errs
}

// mergeLanesFrom is the fewest keyslots of a group whose merges run in
// af.MergeLanes: its eight lanes cost about what three merges one by one
// do, however many are in use.
const mergeLanesFrom = 3

// prepared is a job's keyslot and the digest it opens to, checked
// (Header.openable).
type prepared struct {
	k *Keyslot
	d *Digest
}

// openLanes opens the Laneable keyslots jobs[idx] (prep[i] checked for
// each): each area is read while their keys are derived together, then
// each is decrypted, merged and checked as OpenKeyslot does; the merges
// run in lanes (af.MergeLanes) and the digests' checks in pairs
// (verifyPair) where they can.
func openLanes(jobs []KeyslotJob, prep []prepared, idx []int, keys []*secret.Key, errs []error) {
	scratch, err := secret.New(max(kdf.LanesScratchSize, af.LanesScratchSize, pairScratch))
	if err != nil {
		for _, i := range idx {
			errs[i] = err
		}
		return
	}
	defer scratch.Wipe()
	var ps [kdf.Lanes]kdf.Params
	var pass [kdf.Lanes]*secret.Key
	var dst [kdf.Lanes][]byte
	var ws [kdf.Lanes][]byte
	var reads [kdf.Lanes]<-chan error
	var lane []int // the jobs that got a buffer, by lane
	for _, i := range idx {
		k := prep[i].k
		work, err := k.newWork()
		if err != nil {
			errs[i] = err
			continue
		}
		n := len(lane)
		ws[n] = k.workOf(work)
		defer putWork(work)
		reads[n] = k.readArea(jobs[i].Dev, ws[n])
		ps[n], pass[n], dst[n] = k.KDF, jobs[i].Passphrase, k.derived(ws[n])
		lane = append(lane, i)
	}
	n := len(lane)
	derived := kdf.DeriveLanes(ps[:n], pass[:n], dst[:n], scratch.Bytes())
	var merge []int // lanes whose material is decrypted
	for l, i := range lane {
		k := prep[i].k
		var derr error
		if !derived { // not expected: every job is Laneable
			derr = kdf.DeriveTo(k.KDF, jobs[i].Passphrase, dst[l], k.scratch(ws[l]))
		}
		if err := k.decryptRead(ws[l], reads[l], derr); err != nil {
			errs[i] = fmt.Errorf("keyslot %d: %w", k.ID, err)
			continue
		}
		merge = append(merge, l)
	}
	// The merges af.MergeLanes can take run in its lanes where there are
	// enough of them; the others, one by one.
	var together []int // of merge
	for m, l := range merge {
		k := prep[lane[l]].k
		if af.Laneable(k.KeySize, af.Stripes, k.AF.Hash) {
			together = append(together, m)
		}
	}
	vks := make([]*secret.Key, len(merge)) // nil: not merged yet
	if len(together) >= mergeLanesFrom {
		srcs := make([][]byte, len(together))
		for t, m := range together {
			srcs[t] = prep[lane[merge[m]]].k.material(ws[merge[m]])
		}
		k := prep[lane[merge[together[0]]]].k // Laneable: every one has its key size and hash
		for t, vk := range af.MergeLanes(srcs, k.KeySize, af.Stripes, k.AF.Hash, scratch.Bytes()) {
			vks[together[t]] = vk
		}
	}
	// The merged keys are checked against their digests two at a time
	// where the digests pair (verifyPair), otherwise one by one.
	type merged struct {
		i, l int
		vk   *secret.Key
	}
	var pending []merged
	for m, l := range merge {
		i, vk := lane[l], vks[m]
		if vk == nil {
			var err error
			if vk, err = prep[i].k.merge(ws[l]); err != nil {
				errs[i] = fmt.Errorf("keyslot %d: %w", prep[i].k.ID, err)
				continue
			}
		}
		pending = append(pending, merged{i, l, vk})
	}
	for len(pending) > 0 {
		a := pending[0]
		if len(pending) > 1 {
			b := pending[1]
			res, ok := verifyPair([2]*Digest{prep[a.i].d, prep[b.i].d}, [2]*secret.Key{a.vk, b.vk}, scratch.Bytes())
			if ok {
				keys[a.i], errs[a.i] = prep[a.i].k.checked(a.vk, res[0])
				keys[b.i], errs[b.i] = prep[b.i].k.checked(b.vk, res[1])
				pending = pending[2:]
				continue
			}
		}
		keys[a.i], errs[a.i] = prep[a.i].k.check(a.vk, ws[a.l], prep[a.i].d)
		pending = pending[1:]
	}
}
