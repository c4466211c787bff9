package tpm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil/swtpmtest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/tpm"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/tpm2"
)

func config(t *testing.T, sw *swtpmtest.TPM) tpm.Config {
	return tpm.Config{Device: sw.Device, Path: filepath.Join(t.TempDir(), tpm.FileName), PCRs: []int{7}}
}

func wrapMany(t testing.TB, k kms.KEK, n int) ([]kms.UnwrapRequest, []*secret.Key) {
	t.Helper()
	var reqs []kms.WrapRequest
	var pts []*secret.Key
	for i := range n {
		pt, err := secret.Random(32)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pt.Wipe)
		pts = append(pts, pt)
		reqs = append(reqs, kms.WrapRequest{Context: fmt.Sprintf("uuid-%d", i), Plaintext: pt})
	}
	res, err := k.Wrap(context.Background(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	var out []kms.UnwrapRequest
	for i, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		out = append(out, kms.UnwrapRequest{Context: reqs[i].Context, Wrapped: r.Wrapped})
	}
	return out, pts
}

// A node's first use seals a KEK into a root-only file; a later process
// (a reboot) unseals it once and unwraps every volume's token with it.
func TestOneUnsealServesEveryVolume(t *testing.T) {
	sw := swtpmtest.Start(t)
	cfg := config(t, sw)
	if _, err := tpm.Open(cfg, false); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("opening a KEK that was never sealed: %v, want kms.ErrKeyNotFound", err)
	}
	k, err := tpm.Open(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	reqs, pts := wrapMany(t, k, 32)
	k.Close()
	fi, err := os.Stat(cfg.Path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("sealed KEK file: %v, mode %v; want 0600", err, fi.Mode())
	}
	if bytes.Contains(mustRead(t, cfg.Path), []byte(reqs[0].Wrapped.Ciphertext)) {
		t.Fatal("the file holds a token")
	}

	boot, err := tpm.Open(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	if boot.Key() != k.Key() || reqs[0].Wrapped.Backend != "tpm" {
		t.Fatalf("key %q backend %q after reopening, want %q tpm", boot.Key(), reqs[0].Wrapped.Backend, k.Key())
	}
	for i, r := range reqs { // one volume at a time, as atrestd opens them
		got, err := kms.Unwrap(context.Background(), boot, r.Context, r.Wrapped)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(pts[i]) {
			t.Fatalf("volume %d unwrapped to other bytes", i)
		}
		got.Wipe()
	}
	if n := boot.Unseals(); n != 1 {
		t.Fatalf("%d unseals for 32 volumes, want 1", n)
	}
	// Another volume's token is refused.
	if _, err := kms.Unwrap(context.Background(), boot, reqs[1].Context, reqs[0].Wrapped); !errors.Is(err, kms.ErrCiphertextRejected) {
		t.Fatalf("a token under another volume's UUID: %v, want kms.ErrCiphertextRejected", err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// After measured boot changed, the TPM refuses to unseal: its own error,
// and the sealed file is left as it was.
func TestPCRChangeRefusesAndChangesNothing(t *testing.T) {
	sw := swtpmtest.Start(t)
	cfg := config(t, sw)
	k, err := tpm.Open(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	reqs, _ := wrapMany(t, k, 2)
	k.Close()
	before := mustRead(t, cfg.Path)
	sw.ExtendPCR7(t)
	boot, err := tpm.Open(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	_, err = boot.Unwrap(context.Background(), reqs)
	if !errors.Is(err, tpm2.ErrPCRMismatch) {
		t.Fatalf("unwrap after a PCR change: %v, want tpm2.ErrPCRMismatch", err)
	}
	if !bytes.Equal(before, mustRead(t, cfg.Path)) {
		t.Fatal("the sealed KEK file changed")
	}
	var failed bool
	for _, st := range boot.Check(context.Background()) {
		failed = failed || errors.Is(st.Err, tpm2.ErrPCRMismatch)
	}
	if !failed {
		t.Fatal("kms check does not report the PCR change")
	}
	// Status's health of a policy's tpm factor.
	if _, err := boot.Describe(context.Background()); !errors.Is(err, tpm2.ErrPCRMismatch) {
		t.Fatalf("describe after a PCR change: %v, want tpm2.ErrPCRMismatch", err)
	}
}

// A sealed KEK file copied to another machine (another TPM) does not
// unseal there, and a TPM that is gone is ErrNoTPM.
func TestOtherTPMAndNoTPM(t *testing.T) {
	a, b := swtpmtest.Start(t), swtpmtest.Start(t)
	cfg := config(t, a)
	k, err := tpm.Open(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	reqs, _ := wrapMany(t, k, 1)
	k.Close()
	cfg.Device = b.Device
	other, err := tpm.Open(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Unwrap(context.Background(), reqs); !errors.Is(err, tpm2.ErrOtherTPM) {
		t.Fatalf("unwrap on another TPM: %v, want tpm2.ErrOtherTPM", err)
	}
	// The automatic re-seal renews after a PCR change only: another TPM
	// is the operator's call.
	before, err := os.ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if renewed, _, err := other.RenewAfterPCRChange(); renewed || !errors.Is(err, tpm2.ErrOtherTPM) || other.Renewals() != 0 {
		t.Fatalf("RenewAfterPCRChange on another TPM: %v %v, want tpm2.ErrOtherTPM and nothing renewed", renewed, err)
	}
	if after, _ := os.ReadFile(cfg.Path); !bytes.Equal(before, after) {
		t.Fatal("RenewAfterPCRChange on another TPM changed the KEK file")
	}
	b.Stop()
	if _, err := other.Unwrap(context.Background(), reqs); !errors.Is(err, tpm2.ErrNoTPM) {
		t.Fatalf("unwrap with the TPM stopped: %v, want tpm2.ErrNoTPM", err)
	}
}

// Renew keeps a KEK that unseals; after a PCR change it moves the old one
// aside (its tokens then fail as key not found, the file kept for a PCR
// rollback) and seals a new one to today's PCRs that a later process
// unseals; with the TPM gone it changes nothing.
func TestRenewAfterPCRChange(t *testing.T) {
	sw := swtpmtest.Start(t)
	sw.ExtendPCR7(t)
	cfg := config(t, sw)
	k, err := tpm.Open(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := wrapMany(t, k, 1)
	k.Close()
	boot, err := tpm.Open(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	if renewed, _, err := boot.Renew(); renewed || err != nil {
		t.Fatalf("Renew of a KEK that unseals: %v %v", renewed, err)
	}
	boot.Close()

	sw.ExtendPCR7(t)
	boot, err = tpm.Open(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	oldID := boot.Key()
	renewed, stale, err := boot.Renew()
	if err != nil || !renewed || stale != tpm.StalePath(cfg.Path, oldID) || boot.Key() == oldID {
		t.Fatalf("Renew after the PCR change: %v %q %v (key %s, was %s)", renewed, stale, err, boot.Key(), oldID)
	}
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("the stale KEK is not kept: %v", err)
	}
	// A token of the old KEK goes to the stale KEK, which the TPM
	// refuses for the changed PCR: the operator sees why, not "key not
	// found".
	res, err := boot.Unwrap(context.Background(), old)
	if err != nil || !errors.Is(res[0].Err, tpm2.ErrPCRMismatch) {
		t.Fatalf("a token of the old KEK: %v %v, want tpm2.ErrPCRMismatch", res, err)
	}
	// A token naming a KEK this node never had stays "key not found".
	foreign := slices.Clone(old)
	foreign[0].Wrapped.Key = strings.Repeat("ab", 16)
	if res, err := boot.Unwrap(context.Background(), foreign); err != nil || !errors.Is(res[0].Err, kms.ErrKeyNotFound) {
		t.Fatalf("a token of an unknown KEK: %v %v, want kms.ErrKeyNotFound", res, err)
	}
	fresh, pts := wrapMany(t, boot, 1)
	boot.Close()
	next, err := tpm.Open(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := kms.Unwrap(context.Background(), next, fresh[0].Context, fresh[0].Wrapped)
	if err != nil || !got.Equal(pts[0]) {
		t.Fatalf("the renewed KEK after a restart: %v", err)
	}
	got.Wipe()
	next.Close()

	sw.ExtendPCR7(t)
	before, err := os.ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	sw.Stop()
	k, err = tpm.Open(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := k.Renew(); !errors.Is(err, tpm2.ErrNoTPM) {
		t.Fatalf("Renew without a TPM: %v, want ErrNoTPM", err)
	}
	if after, _ := os.ReadFile(cfg.Path); !bytes.Equal(before, after) {
		t.Fatal("Renew without a TPM changed the KEK file")
	}
}

// changedKEK seals a KEK on a fresh software TPM, then changes PCR 7:
// the state after a firmware update. It returns the KEK's configuration.
func changedKEK(t *testing.T) tpm.Config {
	t.Helper()
	sw := swtpmtest.Start(t)
	sw.ExtendPCR7(t)
	cfg := config(t, sw)
	k := openKEK(t, cfg, true)
	k.Close()
	sw.ExtendPCR7(t)
	return cfg
}

// openKEK opens the KEK of cfg as a process would, closed at the end.
func openKEK(t *testing.T, cfg tpm.Config, create bool) *tpm.KEK {
	t.Helper()
	k, err := tpm.Open(cfg, create)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// RenewAfterPCRChange seals a KEK anew once after a PCR change, however
// often it is asked, and says so in Renewals.
func TestRenewAfterPCRChangeOnce(t *testing.T) {
	cfg := changedKEK(t)
	boot := openKEK(t, cfg, false)
	for i := range 3 {
		renewed, _, err := boot.RenewAfterPCRChange()
		if err != nil || renewed != (i == 0) {
			t.Fatalf("call %d: renewed %v, %v", i, renewed, err)
		}
	}
	if n := boot.Renewals(); n != 1 {
		t.Fatalf("%d renewals, want 1", n)
	}
	if stale, _ := filepath.Glob(cfg.Path + ".stale-*"); len(stale) != 1 {
		t.Fatalf("stale KEKs %v, want one", stale)
	}
}

// Two processes that renew the same KEK after a PCR change end with one
// new KEK: the second finds the first one's in place and uses it, and the
// old one is kept once.
func TestRenewByTwoProcesses(t *testing.T) {
	cfg := changedKEK(t)
	a, b := openKEK(t, cfg, false), openKEK(t, cfg, false)
	if renewed, _, err := a.RenewAfterPCRChange(); !renewed || err != nil {
		t.Fatalf("first renewal: %v %v", renewed, err)
	}
	if renewed, _, err := b.RenewAfterPCRChange(); renewed || err != nil || b.Key() != a.Key() {
		t.Fatalf("second process: renewed %v, %v, key %s; want the first one's %s", renewed, err, b.Key(), a.Key())
	}
	reqs, pts := wrapMany(t, a, 1)
	got, err := kms.Unwrap(context.Background(), b, reqs[0].Context, reqs[0].Wrapped)
	if err != nil || !got.Equal(pts[0]) {
		t.Fatalf("the second process does not unwrap the first one's KEK: %v", err)
	}
	got.Wipe()
	if stale, _ := filepath.Glob(cfg.Path + ".stale-*"); len(stale) != 1 {
		t.Fatalf("stale KEKs %v, want one", stale)
	}
}
