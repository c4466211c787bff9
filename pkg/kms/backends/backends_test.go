package backends

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/secret"
)

// Wrapping creates the local keystore; unwrapping never does. A missing
// keystore at unwrap time is "key not found", and once the file is back
// (restored from a backup) the same Set unwraps again: atrestd picks it
// up without a restart.
func TestUnwrapNeverCreatesTheLocalKeystore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kek")
	cfg, err := config.Parse([]byte("kms: local\nlocal:\n  keystore: "+path+"\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	set, err := Open(cfg, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	kek, err := set.Wrapper()
	if err != nil {
		t.Fatal(err)
	}
	ps, err := secret.Random(32)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Wipe()
	wr, err := kek.Wrap(ctx, []kms.WrapRequest{{Context: "uuid-1", Plaintext: ps}})
	if err != nil || wr[0].Err != nil {
		t.Fatal(err, wr)
	}
	req := []kms.UnwrapRequest{{Context: "uuid-1", Wrapped: wr[0].Wrapped}}
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}

	fresh, err := Open(cfg, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	res := fresh.Unwrap(ctx, req)
	if !errors.Is(res[0].Err, kms.ErrKeyNotFound) {
		t.Fatalf("unwrap with the keystore missing: %v, want ErrKeyNotFound", res[0].Err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unwrap created a keystore: %v", err)
	}
	if err := os.Rename(path+".away", path); err != nil {
		t.Fatal(err)
	}
	res = fresh.Unwrap(ctx, req)
	if res[0].Err != nil {
		t.Fatalf("unwrap after the keystore came back: %v", res[0].Err)
	}
	defer res[0].Plaintext.Wipe()
	if !res[0].Plaintext.Equal(ps) {
		t.Fatal("unwrapped secret differs")
	}
}
