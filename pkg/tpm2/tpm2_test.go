package tpm2

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/atrest/atrest/internal/testutil/swtpmtest"
	"github.com/atrest/atrest/pkg/secret"
)

// openSwtpm starts a fresh swtpm for the test and opens it.
func openSwtpm(t *testing.T) (*swtpmtest.TPM, *TPM) {
	t.Helper()
	sw := swtpmtest.Start(t)
	tp, err := Open(sw.Device)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return sw, tp
}

// extendPCR measures event into PCR pcr of the sha256 bank, as firmware
// would. swtpm starts with every PCR zero ("unenforced"): the tests
// extend PCR 7 first so that the policy binds to a real value.
func extendPCR(t *testing.T, tp *TPM, pcr int, event string) {
	t.Helper()
	d := sha256.Sum256([]byte(event))
	_, err := (tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
	}).Execute(tp.t)
	if err != nil {
		t.Fatalf("extend PCR %d: %v", pcr, err)
	}
}

func key(t *testing.T, s string) *secret.Key {
	t.Helper()
	k, err := secret.FromBytes([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

func seal(t *testing.T, tp *TPM, opts SealOptions) (*secret.Key, *SealResult) {
	t.Helper()
	sec, res, err := tp.Seal(opts)
	if err != nil {
		t.Fatalf("seal: %v", err)
	}
	t.Cleanup(sec.Wipe)
	return sec, res
}

func TestSealUnsealRoundTrip(t *testing.T) {
	_, tp := openSwtpm(t)
	// Before any measurement PCR 7 is zero and Seal says so.
	_, res := seal(t, tp, SealOptions{PCRs: []int{7}})
	if !res.Unenforced {
		t.Error("sealing to an all-zero PCR 7 is not reported as unenforced")
	}
	extendPCR(t, tp, 7, "secure boot state")
	for _, alg := range []PrimaryAlg{ECC, RSA} {
		t.Run(string(alg), func(t *testing.T) {
			sec, res := seal(t, tp, SealOptions{PCRs: []int{7, 0}, PrimaryAlg: alg})
			if res.Unenforced || res.PrimaryAlg != alg || res.Bank != SHA256 || fmt.Sprint(res.PCRs) != "[0 7]" || sec.Len() != SecretSize {
				t.Fatalf("sealed %+v, secret of %d bytes", res.Sealed, sec.Len())
			}
			got, err := tp.Unseal(&res.Sealed, nil)
			if err != nil {
				t.Fatalf("unseal: %v", err)
			}
			defer got.Wipe()
			if !got.Equal(sec) {
				t.Fatal("unsealed secret differs from the sealed one")
			}
		})
	}
}

func TestUnsealAfterPCRChangeIsPCRMismatch(t *testing.T) {
	_, tp := openSwtpm(t)
	extendPCR(t, tp, 7, "secure boot state")
	_, res := seal(t, tp, SealOptions{PCRs: []int{7}})
	if ok, err := tp.PCRsMatch(&res.Sealed); err != nil || !ok {
		t.Fatalf("PCRsMatch right after sealing: %v, %v", ok, err)
	}
	extendPCR(t, tp, 7, "a new boot loader")
	if ok, err := tp.PCRsMatch(&res.Sealed); err != nil || ok {
		t.Fatalf("PCRsMatch after PCR 7 changed: %v, %v", ok, err)
	}
	_, err := tp.Unseal(&res.Sealed, nil)
	if !errors.Is(err, ErrPCRMismatch) {
		t.Fatalf("unseal after PCR 7 changed: %v, want ErrPCRMismatch", err)
	}
	// Another PCR changing does not matter.
	_, res = seal(t, tp, SealOptions{PCRs: []int{7}})
	extendPCR(t, tp, 8, "kernel command line")
	if got, err := tp.Unseal(&res.Sealed, nil); err != nil {
		t.Fatalf("unseal after an unbound PCR changed: %v", err)
	} else {
		got.Wipe()
	}
}

// pinWithZeroInHash returns a PIN whose SHA-256 has a zero byte before its
// end: the auth value go-tpm's own sessions cut short.
func pinWithZeroInHash() string {
	for i := 0; ; i++ {
		pin := "pin" + strconv.Itoa(i)
		h := sha256.Sum256([]byte(pin))
		for j := 0; j < len(h)-1; j++ {
			if h[j] == 0 && h[len(h)-1] != 0 {
				return pin
			}
		}
	}
}

func TestPIN(t *testing.T) {
	_, tp := openSwtpm(t)
	extendPCR(t, tp, 7, "secure boot state")
	for _, pin := range []string{"1234", "correct horse battery staple", pinWithZeroInHash()} {
		sec, res := seal(t, tp, SealOptions{PCRs: []int{7}, PIN: key(t, pin)})
		if !res.PIN {
			t.Fatal("sealed with a PIN but Sealed.PIN is false")
		}
		got, err := tp.Unseal(&res.Sealed, key(t, pin))
		if err != nil {
			t.Fatalf("unseal with the right PIN %q: %v", pin, err)
		}
		if !got.Equal(sec) {
			t.Fatal("unsealed secret differs")
		}
		got.Wipe()
		if _, err := tp.Unseal(&res.Sealed, key(t, pin+"x")); !errors.Is(err, ErrWrongPIN) {
			t.Fatalf("unseal with a wrong PIN: %v, want ErrWrongPIN", err)
		}
		if _, err := tp.Unseal(&res.Sealed, nil); !errors.Is(err, ErrPINRequired) {
			t.Fatalf("unseal without the PIN: %v, want ErrPINRequired", err)
		}
	}
}

func TestRepeatedWrongPINLocksOut(t *testing.T) {
	_, tp := openSwtpm(t)
	_, res := seal(t, tp, SealOptions{PCRs: []int{7}, PIN: key(t, "1234")})
	var err error
	n := 0
	for n = 1; n <= 64; n++ {
		_, err = tp.Unseal(&res.Sealed, key(t, "0000"))
		if !errors.Is(err, ErrWrongPIN) {
			break
		}
	}
	if !errors.Is(err, ErrLockout) {
		t.Fatalf("after %d wrong PINs: %v, want ErrLockout", n, err)
	}
	t.Logf("lockout after %d wrong PINs", n-1)
	// In lockout even the right PIN is refused, with the lockout's error.
	if _, err := tp.Unseal(&res.Sealed, key(t, "1234")); !errors.Is(err, ErrLockout) {
		t.Fatalf("right PIN during lockout: %v, want ErrLockout", err)
	}
}

func TestBlobOfAnotherTPM(t *testing.T) {
	_, a := openSwtpm(t)
	_, b := openSwtpm(t)
	_, res := seal(t, a, SealOptions{PCRs: []int{7}})
	_, err := b.Unseal(&res.Sealed, nil)
	if !errors.Is(err, ErrOtherTPM) {
		t.Fatalf("unseal on another TPM: %v, want ErrOtherTPM", err)
	}
	if want := "not this machine's TPM"; !strings.Contains(err.Error(), want) {
		t.Fatalf("message %q does not say %q", err, want)
	}
}

func TestNoTPM(t *testing.T) {
	sw := swtpmtest.Start(t)
	sw.Stop()
	for _, dev := range []string{sw.Device, "/nonexistent/tpmrm0", "swtpm:host=127.0.0.1,port=1"} {
		if tp, err := Open(dev); !errors.Is(err, ErrNoTPM) {
			if tp != nil {
				tp.Close()
			}
			t.Errorf("Open(%q): %v, want ErrNoTPM", dev, err)
		}
	}
}

func TestStoppedTPMMidUnseal(t *testing.T) {
	sw, tp := openSwtpm(t)
	_, res := seal(t, tp, SealOptions{PCRs: []int{7}})
	sw.Stop()
	if _, err := tp.Unseal(&res.Sealed, nil); !errors.Is(err, ErrTPMGone) {
		t.Fatalf("unseal through a stopped TPM: %v, want ErrTPMGone", err)
	}
}

func TestHandEditedPolicyHash(t *testing.T) {
	_, tp := openSwtpm(t)
	_, res := seal(t, tp, SealOptions{PCRs: []int{7}})
	edited := res.Sealed
	edited.PolicyHash = bytes.Repeat([]byte{1}, 32)
	if _, err := tp.Unseal(&edited, nil); !errors.Is(err, ErrBadToken) {
		t.Fatalf("unseal with an edited policy hash: %v, want ErrBadToken", err)
	}
}

// With no PCRs only the TPM itself binds (systemd-cryptenroll
// --tpm2-pcrs= with an empty list): PolicyPCR over an empty selection.
func TestSealToNoPCRs(t *testing.T) {
	_, tp := openSwtpm(t)
	sec, res := seal(t, tp, SealOptions{})
	extendPCR(t, tp, 7, "anything")
	got, err := tp.Unseal(&res.Sealed, nil)
	if err != nil {
		t.Fatalf("unseal with no PCRs bound: %v", err)
	}
	defer got.Wipe()
	if !got.Equal(sec) {
		t.Fatal("unsealed secret differs")
	}
}

// An owner hierarchy with a password is not a wrong PIN: systemd's scheme
// creates the primary key with empty owner authorization.
func TestOwnerPasswordIsNotAWrongPIN(t *testing.T) {
	_, tp := openSwtpm(t)
	if _, err := (tpm2.HierarchyChangeAuth{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NewAuth:    tpm2.TPM2BAuth{Buffer: []byte("owner")},
	}).Execute(tp.t); err != nil {
		t.Fatal(err)
	}
	_, _, err := tp.Seal(SealOptions{PCRs: []int{7}})
	if !errors.Is(err, ErrOwnerAuth) || errors.Is(err, ErrWrongPIN) || !strings.Contains(err.Error(), "owner hierarchy") {
		t.Fatalf("seal with an owner password: %v, want an error naming the owner hierarchy", err)
	}
}

// BenchmarkUnseal measures one unseal on swtpm (primary key derivation,
// load, policy session, unseal): the cost each TPM2 keyslot pays at boot.
func BenchmarkUnseal(b *testing.B) {
	sw := swtpmtest.Start(b)
	tp, err := Open(sw.Device)
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	sec, res, err := tp.Seal(SealOptions{PCRs: []int{7}})
	if err != nil {
		b.Fatal(err)
	}
	sec.Wipe()
	for b.Loop() {
		got, err := tp.Unseal(&res.Sealed, nil)
		if err != nil {
			b.Fatal(err)
		}
		got.Wipe()
	}
}

// Without a configured bank Seal picks the one systemd would: sha256, unless
// only the sha1 bank has measurements in the selected PCRs.
func TestSealPicksTheBankSystemdWould(t *testing.T) {
	_, tp := openSwtpm(t)
	_, res := seal(t, tp, SealOptions{PCRs: []int{7}})
	if res.Bank != SHA256 {
		t.Fatalf("no measurements: bank %s, want sha256", res.Bank)
	}
	// A firmware that measures into sha1 only.
	d := sha256.Sum256([]byte("sha1-only firmware"))
	if _, err := (tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: 7, Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA1, Digest: d[:20]}}},
	}).Execute(tp.t); err != nil {
		t.Skipf("this swtpm has no sha1 bank: %v", err)
	}
	sec, res := seal(t, tp, SealOptions{PCRs: []int{7}})
	if res.Bank != SHA1 || res.Unenforced {
		t.Fatalf("sha1-only measurements: bank %s (unenforced %v), want sha1", res.Bank, res.Unenforced)
	}
	got, err := tp.Unseal(&res.Sealed, nil)
	if err != nil {
		t.Fatalf("unseal from the sha1 bank: %v", err)
	}
	defer got.Wipe()
	if !got.Equal(sec) {
		t.Fatal("unsealed secret differs")
	}
	extendPCR(t, tp, 7, "sha256 measurement")
	if _, res := seal(t, tp, SealOptions{PCRs: []int{7}}); res.Bank != SHA256 {
		t.Fatalf("measurements in both banks: bank %s, want sha256", res.Bank)
	}
}
