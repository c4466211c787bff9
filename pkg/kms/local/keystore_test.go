package local_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/local"
	"github.com/atrest/atrest/pkg/secret"
)

const (
	volA = "0b5c2a52-8a4e-4b8f-9f43-1c1f0c6c2a01"
	volB = "9d1f3c77-2e55-4c3a-8b0e-7a6f5e4d3c02"
)

func open(t *testing.T, path string) *local.Keystore {
	t.Helper()
	ks, err := local.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	return ks
}

func random(t *testing.T) *secret.Key {
	t.Helper()
	k, err := secret.Random(32)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

func TestFirstUseCreatesPrivateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "kek")
	ks := open(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("new KEK file has mode %04o, want 0600", perm)
	}
	info, err := ks.Describe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.LatestVersion != 1 || info.MinDecryptionVersion != 1 || info.Backend != "local" || len(info.Key) != 32 {
		t.Errorf("fresh keystore describes as %+v", info)
	}
	// Opening again uses the same KEK: what one process wrapped, another unwraps.
	pt := random(t)
	w, err := kms.Wrap(context.Background(), ks, volA, pt)
	if err != nil {
		t.Fatal(err)
	}
	got, err := kms.Unwrap(context.Background(), open(t, path), volA, w)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Wipe()
	if !got.Equal(pt) {
		t.Error("a second Open of the same file unwrapped to different bytes")
	}
}

func TestRefusesWiderPermissions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek")
	open(t, path)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := local.Open(path)
		if !errors.Is(err, kms.ErrConfig) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: Open = %v, want ErrConfig naming the fix", mode, err)
		}
	}
}

func TestRejectsNonKEKFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(path, []byte("not a key file at all, really not"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := local.Open(path); !errors.Is(err, kms.ErrConfig) {
		t.Errorf("Open of a foreign file = %v, want ErrConfig", err)
	}
	data, _ := os.ReadFile(path)
	if string(data) != "not a key file at all, really not" {
		t.Error("Open changed a file it refused")
	}
}

func TestRoundTripAndContextBinding(t *testing.T) {
	ctx := context.Background()
	ks := open(t, filepath.Join(t.TempDir(), "kek"))
	pt := random(t)
	w, err := kms.Wrap(ctx, ks, volA, pt)
	if err != nil {
		t.Fatal(err)
	}
	if w.Backend != "local" || w.Key != ks.Key() || w.KeyVersion != 1 || !strings.HasPrefix(w.Ciphertext, "local:v1:") {
		t.Errorf("wrapped = %+v", w)
	}
	got, err := kms.Unwrap(ctx, ks, volA, w)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(pt) {
		t.Error("round trip changed the secret")
	}
	got.Wipe()

	if _, err := kms.Unwrap(ctx, ks, volB, w); !errors.Is(err, kms.ErrCiphertextRejected) {
		t.Errorf("unwrap with another volume's context = %v, want ErrCiphertextRejected", err)
	}
	tampered := w
	tampered.Ciphertext = w.Ciphertext[:len(w.Ciphertext)-4] + "AAA="
	if _, err := kms.Unwrap(ctx, ks, volA, tampered); !errors.Is(err, kms.ErrCiphertextRejected) {
		t.Errorf("unwrap of a tampered ciphertext = %v, want ErrCiphertextRejected", err)
	}
	// A token claiming version 1 but carrying a forged version field is
	// caught by the additional data, not trusted.
	forged := w
	forged.Ciphertext = strings.Replace(w.Ciphertext, "local:v1:", "local:v01:", 1)
	if _, err := kms.Unwrap(ctx, ks, volA, forged); !errors.Is(err, kms.ErrCiphertextRejected) {
		t.Errorf("unwrap with a non-canonical version = %v, want ErrCiphertextRejected", err)
	}
}

func TestOtherKeystoreIsKeyNotFound(t *testing.T) {
	ctx := context.Background()
	a := open(t, filepath.Join(t.TempDir(), "kek"))
	b := open(t, filepath.Join(t.TempDir(), "kek"))
	w, err := kms.Wrap(ctx, a, volA, random(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kms.Unwrap(ctx, b, volA, w); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Errorf("unwrap by another node's keystore = %v, want ErrKeyNotFound", err)
	}
}

func TestRotateRewrapRetire(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kek")
	ks := open(t, path)
	daemon := open(t, path) // another process holding the same file
	pt := random(t)
	old, err := kms.Wrap(ctx, ks, volA, pt)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ks.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.LatestVersion != 2 || info.MinDecryptionVersion != 1 {
		t.Fatalf("after rotate: %+v", info)
	}
	if !info.Stale(old) {
		t.Error("a v1 token is not reported stale after rotation")
	}
	nw, err := kms.Rewrap(ctx, daemon, volA, old)
	if err != nil {
		t.Fatal(err)
	}
	if nw.KeyVersion != 2 || !strings.HasPrefix(nw.Ciphertext, "local:v2:") {
		t.Errorf("rewrapped token = %+v, want version 2 (the other process must see the rotation)", nw)
	}
	for _, w := range []kms.Wrapped{old, nw} {
		got, err := kms.Unwrap(ctx, daemon, volA, w)
		if err != nil {
			t.Fatalf("v%d before retiring: %v", w.KeyVersion, err)
		}
		if !got.Equal(pt) {
			t.Errorf("v%d unwrapped to other bytes", w.KeyVersion)
		}
		got.Wipe()
	}
	if _, err := ks.SetMinDecryptionVersion(ctx, 3); !errors.Is(err, kms.ErrInvalidRequest) {
		t.Errorf("retiring beyond the newest version = %v, want ErrInvalidRequest", err)
	}
	if info, err = ks.SetMinDecryptionVersion(ctx, 2); err != nil || info.MinDecryptionVersion != 2 {
		t.Fatalf("retire: %+v, %v", info, err)
	}
	if _, err := kms.Unwrap(ctx, daemon, volA, old); !errors.Is(err, kms.ErrCiphertextRejected) || !strings.Contains(err.Error(), "retired") {
		t.Errorf("v1 after retiring = %v, want ErrCiphertextRejected saying retired", err)
	}
	got, err := kms.Unwrap(ctx, daemon, volA, nw)
	if err != nil {
		t.Fatal(err)
	}
	got.Wipe()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("rewritten KEK file has mode %04o", fi.Mode().Perm())
	}
}

func TestBatchKeepsOrderAndPerItemErrors(t *testing.T) {
	ctx := context.Background()
	ks := open(t, filepath.Join(t.TempDir(), "kek"))
	const n = 100
	reqs := make([]kms.WrapRequest, n)
	for i := range reqs {
		reqs[i] = kms.WrapRequest{Context: fmt.Sprintf("vol-%03d", i), Plaintext: random(t)}
	}
	wrapped, err := ks.Wrap(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	un := make([]kms.UnwrapRequest, n)
	for i, w := range wrapped {
		un[i] = kms.UnwrapRequest{Context: reqs[i].Context, Wrapped: w.Wrapped}
	}
	un[7].Context = "vol-999" // one token moved to another volume
	res, err := ks.Unwrap(ctx, un)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if i == 7 {
			if !errors.Is(r.Err, kms.ErrCiphertextRejected) {
				t.Errorf("item 7: %v, want ErrCiphertextRejected", r.Err)
			}
			continue
		}
		if r.Err != nil || !r.Plaintext.Equal(reqs[i].Plaintext) {
			t.Errorf("item %d: %v", i, r.Err)
		}
		r.Plaintext.Wipe()
	}
}

func TestInvalidRequests(t *testing.T) {
	ctx := context.Background()
	ks := open(t, filepath.Join(t.TempDir(), "kek"))
	if _, err := kms.Wrap(ctx, ks, "", random(t)); !errors.Is(err, kms.ErrInvalidRequest) {
		t.Errorf("empty context: %v", err)
	}
	wiped := random(t)
	wiped.Wipe()
	if _, err := kms.Wrap(ctx, ks, volA, wiped); !errors.Is(err, kms.ErrInvalidRequest) {
		t.Errorf("wiped plaintext: %v", err)
	}
	if res, err := ks.Wrap(ctx, nil); err != nil || len(res) != 0 {
		t.Errorf("empty batch: %v, %v", res, err)
	}
}

// A KEK whose last byte is 0x0a once lost it to newline trimming; every
// byte value at the end must survive a reopen.
func TestKEKFileKeepsEveryTrailingByte(t *testing.T) {
	ctx := context.Background()
	for range 40 {
		path := filepath.Join(t.TempDir(), "kek")
		ks := open(t, path)
		for range 10 {
			if _, err := ks.Rotate(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := local.Open(path); err != nil {
			t.Fatalf("reopen: %v", err)
		}
	}
}

func TestCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek")
	ks := open(t, path)
	steps := ks.Check(context.Background())
	if len(steps) != 2 || steps[0].Err != nil || steps[1].Err != nil || !strings.Contains(steps[0].Detail, "mode 0600") {
		t.Fatalf("healthy keystore: %+v", steps)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	steps = ks.Check(context.Background())
	if len(steps) != 1 || !errors.Is(steps[0].Err, kms.ErrConfig) {
		t.Errorf("keystore whose file became world-readable: %+v", steps)
	}
}
