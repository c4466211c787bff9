package af

import (
	"testing"

	"github.com/atrest/atrest/pkg/secret"
)

func TestSplitMergeRoundTrip(t *testing.T) {
	for _, name := range []string{"sha1", "sha256", "sha384", "sha512"} {
		h := name
		for _, n := range []int{16, 32, 64} {
			for _, stripes := range []int{1, 2, Stripes} {
				k, err := secret.Random(n)
				if err != nil {
					t.Fatal(err)
				}
				m, err := Split(k, stripes, h)
				if err != nil {
					t.Fatal(err)
				}
				if m.Len() != Size(n, stripes) || m.Len()%SectorSize != 0 {
					t.Fatalf("material %d bytes for %dx%d", m.Len(), n, stripes)
				}
				got, err := Merge(m, n, stripes, h)
				if err != nil {
					t.Fatal(err)
				}
				if !got.Equal(k) {
					t.Fatalf("%s, %d bytes, %d stripes: merge does not recover the key", name, n, stripes)
				}
				// Destroying one byte of any stripe destroys the key.
				if stripes > 1 {
					m.Bytes()[n*(stripes/2)] ^= 1
					bad, _ := Merge(m, n, stripes, h)
					if bad.Equal(k) {
						t.Fatalf("%s: a damaged stripe still yields the key", name)
					}
					bad.Wipe()
				}
				k.Wipe()
				m.Wipe()
				got.Wipe()
			}
		}
	}
}

func TestMergeRefusesShortMaterial(t *testing.T) {
	m, _ := secret.New(100)
	defer m.Wipe()
	if _, err := Merge(m, 64, Stripes, "sha256"); err == nil {
		t.Fatal("merge of too little material succeeded")
	}
}

// TestMergeStreamingWaits: the streaming merge reads nothing past the ready
// mark before wait returns, and gives the same key.
func TestMergeStreamingWaits(t *testing.T) {
	k, _ := secret.Random(64)
	defer k.Wipe()
	m, err := Split(k, Stripes, "sha256")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Wipe()
	full := append([]byte(nil), m.Bytes()...)
	ready := 1000 * 64
	clear(m.Bytes()[ready:])
	waited := false
	got, err := MergeStreaming(m.Bytes(), 64, Stripes, "sha256", make([]byte, ScratchSize), ready, func() {
		waited = true
		copy(m.Bytes()[ready:], full[ready:])
	})
	if err != nil {
		t.Fatal(err)
	}
	defer got.Wipe()
	if !waited || !got.Equal(k) {
		t.Fatalf("waited %v, key recovered %v", waited, got.Equal(k))
	}
}
