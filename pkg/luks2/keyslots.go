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
// each is decrypted, merged and checked as OpenKeyslot does.
func openLanes(jobs []KeyslotJob, prep []prepared, idx []int, keys []*secret.Key, errs []error) {
	scratch, err := secret.New(max(kdf.LanesScratchSize, af.LanesScratchSize))
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
	var merge []int // lanes whose material is decrypted and can merge in lanes
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
		if af.Laneable(k.KeySize, af.Stripes, k.AF.Hash) {
			merge = append(merge, l)
		} else {
			keys[i], errs[i] = k.finishMerge(ws[l], prep[i].d)
		}
	}
	var vks []*secret.Key // nil: each merges alone
	if len(merge) >= mergeLanesFrom {
		srcs := make([][]byte, len(merge))
		for m, l := range merge {
			srcs[m] = prep[lane[l]].k.material(ws[l])
		}
		k := prep[lane[merge[0]]].k // Laneable: every one has its key size and hash
		vks = af.MergeLanes(srcs, k.KeySize, af.Stripes, k.AF.Hash, scratch.Bytes())
	}
	for m, l := range merge {
		i := lane[l]
		if vks == nil {
			keys[i], errs[i] = prep[i].k.finishMerge(ws[l], prep[i].d)
			continue
		}
		keys[i], errs[i] = prep[i].k.check(vks[m], ws[l], prep[i].d)
	}
}
