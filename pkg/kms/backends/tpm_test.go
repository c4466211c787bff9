package backends

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil/swtpmtest"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/tpm"
	"github.com/atrest/atrest/pkg/tpm2"
)

// kms check diagnoses a policy's tpm factor: before any KEK is sealed it
// says so and seals none; once the factor sealed one the check passes, and
// after PCR 7 changed it names the PCR mismatch.
func TestKMSCheckOfTheTPMFactor(t *testing.T) {
	sw := swtpmtest.Start(t)
	dir := t.TempDir()
	doc := "kms: local\nlocal:\n  keystore: " + dir + "/kek\nstate_dir: " + dir + "\nrecovery:\n  mode: none\ntpm:\n  device: " + sw.Device + "\npolicy:\n  any: [tpm, local]\n"
	cfg, err := config.Parse([]byte(doc), "")
	if err != nil {
		t.Fatal(err)
	}
	check := func() []kms.CheckStep {
		set, err := Open(cfg, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		defer set.Close()
		cs, err := set.Checkers()
		if err != nil {
			t.Fatal(err)
		}
		var out []kms.CheckStep
		for _, c := range cs {
			for _, st := range c.Check(context.Background()) {
				if strings.HasPrefix(st.Name, "factor tpm: ") {
					out = append(out, st)
				}
			}
		}
		return out
	}
	steps := check()
	if len(steps) != 1 || !errors.Is(steps[0].Err, kms.ErrKeyNotFound) {
		t.Fatalf("before a KEK is sealed: %+v, want one step saying it does not exist", steps)
	}
	if _, err := os.Stat(tpm.DefaultPath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("kms check sealed a KEK: %v", err)
	}
	set, err := Open(cfg, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := set.Factor("tpm"); err != nil {
		t.Fatalf("policy factor tpm: %v", err)
	}
	set.Close()
	for _, st := range check() {
		if st.Err != nil {
			t.Fatalf("with the KEK sealed: %s: %v", st.Name, st.Err)
		}
	}
	sw.ExtendPCR7(t)
	var mismatch bool
	for _, st := range check() {
		mismatch = mismatch || (st.Name == "factor tpm: tpm" && errors.Is(st.Err, tpm2.ErrPCRMismatch))
	}
	if !mismatch {
		t.Fatal("kms check does not name the tpm factor's PCR mismatch")
	}
}
