package volume

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
)

// crash is what an armed failpoint panics with: the use case stops there
// as a killed process would (its deferred lock release and device close
// run, which a dying process gets from the kernel too).
type crash string

// armFailpoint makes the failpoint named point panic with crash(point)
// until the test ends.
func armFailpoint(t *testing.T, point string) {
	t.Helper()
	prev := failpoint
	failpoint = func(name string) {
		if name == point {
			panic(crash(name))
		}
	}
	t.Cleanup(func() { failpoint = prev })
}

// crashed runs f and reports whether it stopped at an armed failpoint.
func crashed(f func()) (hit bool) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(crash); !ok {
				panic(r)
			}
			hit = true
		}
	}()
	f()
	return false
}

// withRecovery sets the Manager's recovery policy.
func withRecovery(m *Manager, mode string) *Manager {
	m.cfg.Recovery.Mode = mode
	return m
}

// formatted formats a fresh image as name and returns it with the result.
func formatted(t *testing.T, m *Manager, name string) (string, *FormatResult) {
	t.Helper()
	img := testImage(t)
	res, err := m.Format(context.Background(), FormatOptions{Device: img, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(res.Recovery.Wipe)
	return img, res
}

// keyCopy keeps a shown recovery key the way an operator would: the test
// holds it after the use case wiped its own copy.
func keyCopy(t *testing.T, k *secret.Key) *secret.Key {
	t.Helper()
	if k == nil {
		t.Fatal("no recovery key to show")
	}
	c, err := k.Clone()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Wipe)
	return c
}

func find(t *testing.T, m *Manager, img string) *Volume {
	t.Helper()
	v, err := m.Find(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// recoveryOpens reports whether key opens one of v's recovery keyslots
// (also in a header under re-encryption).
func recoveryOpens(t *testing.T, v *Volume, key *secret.Key) bool {
	t.Helper()
	f, err := luks2.OpenFile(v.Device, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, s := range v.Recovery {
		if vk, err := openKeyslot(v.Header, f, s, key); err == nil {
			vk.Wipe()
			return true
		}
	}
	return false
}

// platformOpens reports whether the volume opens through the KMS, as the
// next boot would.
func platformOpens(t *testing.T, m *Manager, v *Volume) error {
	t.Helper()
	f, err := luks2.OpenFile(v.Device, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vk, err := m.platformKey(context.Background(), v, f)
	vk.Wipe()
	return err
}

// problems is what status says about the volume on img.
func problems(t *testing.T, m *Manager, img string) []string {
	t.Helper()
	st, errs := m.StatusOf(context.Background(), []string{img})
	if len(errs) > 0 || len(st) != 1 {
		t.Fatalf("status of %s: %v %v", img, st, errs)
	}
	return st[0].Problems
}

func hasProblem(ps []string, part string) bool {
	return slices.ContainsFunc(ps, func(p string) bool { return strings.Contains(p, part) })
}

// journalLeft reports whether a journal of uuid is still there.
func journalLeft(t *testing.T, m *Manager, uuid string) bool {
	t.Helper()
	j, err := m.readJournal(uuid)
	if err != nil {
		t.Fatal(err)
	}
	return j != nil
}
